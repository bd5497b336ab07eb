"""What a hole in a decode's run of sequence ids costs, and what filling or packing it saves
(runner/packing.py): in-process, one token for each of a set of sequence ids per llama_decode,
every sequence holding a 150-token prompt, each layout decoded `--steps` times; the median ms of a
decode for the layout as given, with its holes filled to one run, and packed (as many ids from 0);
then what moving one sequence to another slot costs (its state out and in, as SlotPool.move).

    PYTHONPATH=src python benchmarks/holes.py [--model smollm2:135m] [--threads 2] [--rounds 2] [--exact]

With one KV stream per sequence (corral's and llama-server's default) llama.cpp cuts a batch into
ubatches of consecutive sequence ids, so a layout with holes takes several passes over the
weights. Not part of CI.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time
from pathlib import Path

import llama_cpp as ll

from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.protocol import LoadConfig

STORE = Path(os.environ.get("CORRAL_TEST_MODELS", Path.home() / ".cache" / "corral" / "test-models"))
LAYOUTS = [[0, 1, 2, 4, 5, 6, 7], [0, 1, 3, 4, 5], [0, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3, 5],
           [0, 2, 4, 6, 7], [0, 3, 7], [0, 2], [1, 3]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2:135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--exact", action="store_true", help="exact mode's kernels (runner/exactness.py)")
    args = p.parse_args()
    path = Store(STORE).model_file(ModelName.parse(args.model))
    eng = Engine(LoadConfig(str(path), n_slots=8, n_ctx_slot=2048, n_threads=args.threads, prompt_cache_bytes=0,
                            exact=args.exact))
    b = eng._buffers
    pos = [0] * 8

    def decode(entries: list[tuple[int, int]]) -> float:
        n = 0
        for seq, k in entries:
            for i in range(k):
                b.tok[n], b.pos[n], b.seq[n], b.logits[n] = 100 + i, pos[seq] + i, seq, i == k - 1
                n += 1
            pos[seq] += k
        b.c.n_tokens = n
        t = time.perf_counter()
        if ll.llama_decode(eng.ctx, b.c) != 0:
            raise RuntimeError("llama_decode failed")
        return (time.perf_counter() - t) * 1e3

    def median_ms(seqs: list[int]) -> float:
        return statistics.median(decode([(s, 1) for s in seqs]) for _ in range(args.steps))

    for seq in range(8):
        decode([(seq, 150)])
    print(f"{'ids':26s} {'as given':>9s} {'filled':>9s} {'packed':>9s}  filled ids")
    for _ in range(args.rounds):
        for seqs in LAYOUTS:
            filled = list(range(seqs[0], seqs[-1] + 1))
            packed = list(range(len(seqs)))
            ms = [median_ms(seqs), median_ms(filled), median_ms(packed)]
            print(f"{seqs!s:26s} " + " ".join(f"{m:7.1f}ms" for m in ms) + f"  {filled}")
    n = ll.llama_state_seq_get_size(eng.ctx, 0)
    buf = (ctypes.c_uint8 * n)()
    moves = []
    for _ in range(args.steps):
        t = time.perf_counter()
        ll.llama_state_seq_get_data(eng.ctx, buf, n, 0)
        ll.llama_memory_seq_rm(eng.memory, 7, -1, -1)
        ll.llama_state_seq_set_data(eng.ctx, buf, n, 7)
        moves.append((time.perf_counter() - t) * 1e3)
    print(f"a move of a {pos[0]}-token sequence's state ({n / 2**20:.1f} MiB): {statistics.median(moves):.2f} ms")
    eng.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
