"""The cost of saving a finished sequence's KV state into the prompt cache (runner/prompt_cache.py
`PromptCache._state`, called when every request ends), in-process, before vs after a change:

    python benchmarks/prompt_cache_save.py --src /tmp/before/src --src src [--tokens 300] [--saves 200]

Each --src tree runs in a process of its own (alternating, --rounds times): a SmolLM2 engine
(2048 context, 2 threads) decodes a prompt of --tokens tokens into one sequence, then copies that
sequence's state out --saves times. Prints the median ms per save and the state's size. On a GPU
machine the copy comes out of VRAM (LLAMA_CPP_LIB_PATH a CUDA build, --gpu). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = (Path(os.environ.get("CORRAL_TEST_MODELS", Path.home() / ".cache" / "corral" / "test-models"))
         / "blobs" / "sha256-b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


def measure(tokens: int, saves: int, gpu: bool) -> dict:
    """In this process (its corral comes from PYTHONPATH): ms per save of one sequence's state."""
    import llama_cpp as ll

    from corral.runner.engine import Engine
    from corral.runner.protocol import LoadConfig

    engine = Engine(LoadConfig(str(MODEL), n_slots=2, n_ctx_slot=2048, n_threads=2,
                               n_gpu_layers=-1 if gpu else 0))
    text = " ".join(f"item {i}" for i in range(tokens))
    prompt = engine.tokenize(text)[:tokens]
    ids = (ll.llama_token * len(prompt))(*prompt)  # referenced until the decode: the batch points into it
    batch = ll.llama_batch_get_one(ids, len(prompt))
    rc = ll.llama_decode(engine.ctx, batch)
    assert rc == 0, rc
    cache = engine.prompt_cache
    n = ll.llama_state_seq_get_size(engine.ctx, 0)
    times = []
    for _ in range(saves):
        t0 = time.perf_counter_ns()
        state = cache._state(0, n)
        times.append(time.perf_counter_ns() - t0)
        assert state is not None and len(state) > 0
    engine.close()
    return {"ms_per_save": statistics.median(times) / 1e6, "state_bytes": n, "tokens": len(prompt)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", action="append", default=[], help="a source tree (PYTHONPATH); several to compare")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--saves", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.tokens, args.saves, args.gpu)))
        return 0
    results: dict[str, list[float]] = {src: [] for src in args.src}
    for _ in range(args.rounds):
        for src in args.src:
            out = subprocess.run([sys.executable, __file__, "--child", "--tokens", str(args.tokens),
                                  "--saves", str(args.saves)] + (["--gpu"] if args.gpu else []),
                                 env={**os.environ, "PYTHONPATH": str(Path(src).resolve())},
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results[src].append(row["ms_per_save"])
            print(f"{src}: {row['ms_per_save']:.3f} ms per save of {row['state_bytes'] / 2**20:.1f} MiB "
                  f"({row['tokens']} tokens)")
    for src, ms in results.items():
        print(f"{src}: median {statistics.median(ms):.3f} ms per save over {len(ms)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
