"""What logprobs cost inside the engine: the time of one generation step (decode + sampling +
logprobs) at C=1, without logprobs and with them, on a real model, in this process (no HTTP, no
pipe), so a busy machine disturbs it less than a served run. Also the log-softmax alone.

    python benchmarks/logprobs_engine.py [--model smollm2:135m] [--rounds 6] [--tokens 64]
    PYTHONPATH=/tmp/before/src python benchmarks/logprobs_engine.py   # a tree without logprobs: plain only

The variants alternate round by round; the median step time over all rounds is reported. Not CI.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.protocol import GenerationOptions, LoadConfig

VARIANTS = {"plain": {}, "logprobs": {"logprobs": True}, "top 5": {"logprobs": True, "top_logprobs": 5},
            "top 20": {"logprobs": True, "top_logprobs": 20}}


def run(engine: Engine, prompt: list[int], tokens: int, extra: dict) -> list[int]:
    """Step times (ns) of one request's generated tokens."""
    opts = GenerationOptions(temperature=0, repeat_penalty=1.0, num_predict=tokens, **extra)
    engine.submit("r", prompt, opts)
    times = []
    while engine.active:
        prefilling = engine.active[0].request.prefilling
        t0 = time.perf_counter_ns()
        engine.step()
        if not prefilling:
            times.append(time.perf_counter_ns() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    path = Store(args.models).model_file(ModelName.parse(args.model))
    engine = Engine(LoadConfig(str(path), n_slots=1, n_ctx_slot=1024, n_threads=args.threads))
    # ChatML (smollm2's template): an instruct model given bare text may end at once.
    prompt = engine.tokenize("<|im_start|>user\nTell me a long story about a lighthouse keeper.<|im_end|>\n"
                             "<|im_start|>assistant\n")
    # A source tree from before logprobs (PYTHONPATH=...): its plain path only, for before/after.
    variants = VARIANTS if "logprobs" in GenerationOptions.names() else {"plain": {}}
    steps: dict[str, list[int]] = {name: [] for name in variants}
    run(engine, prompt, 4, {})  # warm up
    for _ in range(args.rounds):
        for name, extra in variants.items():
            steps[name] += run(engine, prompt, args.tokens, extra)
    plain = statistics.median(steps["plain"])
    print(f"{args.model} (n_vocab {engine.n_vocab}), C=1, {args.threads} thread(s), "
          f"{args.rounds} x {args.tokens} tokens: median step")
    for name, values in steps.items():
        med = statistics.median(values)
        print(f"  {name:9s} {med / 1e6:7.3f} ms  ({1e9 / med:6.1f} tokens/s)  x{plain / med:.3f} of plain's speed")
    if len(variants) == 1:
        return
    from corral.runner.logprobs import log_softmax_at

    row = np.random.default_rng(0).standard_normal(engine.n_vocab).astype(np.float32)
    for top in (0, 5, 20):
        best = min(_time(lambda top=top: log_softmax_at(row, 1, top)) for _ in range(200))
        print(f"  log_softmax_at(top={top:2d}) alone: {best / 1e3:6.1f} us (best of 200)")
    engine.close()


def _time(fn) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


if __name__ == "__main__":
    main()
