"""The engine's kernel choices, in-process (no HTTP, no pipe): exact vs fast mode, flash attention
on/off in fast mode, and the KV cache types f16 / q8_0 / q4_0. C=8 greedy chats on a real model;
each variant runs in a fresh child process, so its memory figures are its own.

    python benchmarks/kernels.py [--model smollm2:135m] [--rounds 2] [--tokens 64] [--slots 8]
    python benchmarks/kernels.py --variants fast,fast-fa-off    # a subset

Reports output tokens/s (all slots), the KV cache's size per slot (computed for the type, as
the scheduler's estimate) and the runner's resident memory growth when the context is made
(RSS after minus before: the KV cache and compute buffers). Variants alternate round by round;
the median over rounds is shown. Not CI; numbers on a shared machine are noisy (see `uptime`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

import psutil

VARIANTS: dict[str, dict] = {
    "exact": {"exact": True},
    "fast": {},
    "fast-fa-off": {"flash_attention": False},
    "fast-fa-on": {"flash_attention": True},
    "q8_0": {"kv_type": "q8_0"},
    "q4_0": {"kv_type": "q4_0"},
}
PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length.",
           "Tell me about the history of bread.", "How do airplanes fly? Explain it well.",
           "Describe a walk through a forest in autumn.", "Write a letter to a friend about a trip."]


def measure(path: str, kernels: dict, slots: int, n_ctx: int, tokens: int, threads: int) -> dict:
    from corral.models.gguf_info import read_gguf
    from corral.runner.engine import Engine
    from corral.runner.kernels import KvType
    from corral.runner.protocol import Done, GenerationOptions, LoadConfig, Token

    proc = psutil.Process()
    before = proc.memory_info().rss
    cfg = LoadConfig(path, n_slots=slots, n_ctx_slot=n_ctx, n_threads=threads, **kernels)
    engine = Engine(cfg)
    rss = proc.memory_info().rss - before
    chats = [engine.tokenize(f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n") for p in PROMPTS]
    opts = GenerationOptions(temperature=0, num_predict=tokens)

    def run(n: int) -> tuple[float, list[str]]:
        texts: dict[str, list[str]] = {}
        for i in range(slots):
            engine.submit(f"r{i}", chats[i % len(chats)], opts)
            texts[f"r{i}"] = []
        n_out = 0
        t0 = time.perf_counter()
        while engine.active:
            for ev in engine.step():
                if isinstance(ev, Token):
                    texts[ev.id].append(ev.text)
                elif isinstance(ev, Done):
                    n_out += ev.eval_count
        elapsed = time.perf_counter() - t0
        return n_out / elapsed, ["".join(texts[f"r{i}"]) for i in range(slots)]

    run(4)  # warm up
    tps, texts = run(tokens)
    info = read_gguf(Path(path))
    kv_slot = info.kv_bytes_per_token(KvType(kernels.get("kv_type", "f16")).bytes_per_value) * n_ctx
    engine.close()
    return {"tps": tps, "rss": rss, "kv_slot": kv_slot, "first": texts[0][:60]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    ap.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    args = ap.parse_args()
    from corral.models.store import ModelName, Store

    path = str(Store(args.models).model_file(ModelName.parse(args.model)))
    names = args.variants.split(",")
    results: dict[str, list[dict]] = {n: [] for n in names}
    ctx = mp.get_context("spawn")
    for _ in range(args.rounds):
        for name in names:
            with ctx.Pool(1) as pool:
                row = pool.apply(measure, (path, VARIANTS[name], args.slots, args.ctx, args.tokens, args.threads))
            results[name].append(row)
            print(f"  ({name}: {row['tps']:.1f} tok/s, RSS+ {row['rss'] / 2**20:.1f} MiB)", flush=True)
    print(f"{args.model}, C={args.slots}, {args.ctx} ctx/slot, {args.threads} threads, {args.tokens} tokens, "
          f"{args.rounds} rounds (median); load {os.getloadavg()[0]:.2f}")
    print(f"  {'variant':12s} {'tok/s':>7s} {'KV/slot MiB':>11s} {'RSS+ MiB':>9s}  first reply")
    for name, rows in results.items():
        tps = statistics.median(r["tps"] for r in rows)
        rss = statistics.median(r["rss"] for r in rows)
        print(f"  {name:12s} {tps:7.1f} {rows[0]['kv_slot'] / 2**20:11.2f} {rss / 2**20:9.1f}  {rows[0]['first']!r}")


if __name__ == "__main__":
    main()
