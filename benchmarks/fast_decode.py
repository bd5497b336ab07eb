"""Fast mode's shared decode (prompts, drafts and streams in one llama_decode per step) against
another source tree's engine, in-process (no HTTP, no pipe), SmolLM2 greedy, 2 threads.

    python benchmarks/fast_decode.py --baseline-src /tmp/decode-before/src [--rounds 2] [--seconds 20]

Workloads, each in a fresh child process per tree, trees alternating round by round:
  burst     8 chats submitted at once, 64 tokens each (all prompts prefill in the same step)
  closed    8 closed-loop clients for --seconds (a finished request is replaced at once, so
            prompts arrive while the others generate), 64 tokens each
  spec      closed loop of 4: two speculative requests that repeat their prompt, two plain ones
Reports output tok/s and TTFT p50 (submit to first token, in engine steps' wall time) per tree,
the median over rounds and the ratio. Not CI; a shared machine makes it noisy (the load is printed).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length.",
           "Tell me about the history of bread.", "How do airplanes fly? Explain it well.",
           "Describe a walk through a forest in autumn.", "Write a letter to a friend about a trip."]
REPEAT = ("Repeat this text exactly, word for word: The lighthouse keeper climbed the spiral stairs every "
          "evening at dusk. He wound the clockwork, polished the great lens until it shone, and lit the lamp.")


def measure(src: str, path: str, workload: str, seconds: float, tokens: int) -> dict:
    sys.path.insert(0, src)
    from corral.runner.engine import Engine
    from corral.runner.protocol import Done, Failed, GenerationOptions, LoadConfig, Token

    slots = 4 if workload == "spec" else 8
    engine = Engine(LoadConfig(path, n_slots=slots, n_ctx_slot=2048, n_threads=2, prompt_cache_bytes=0))
    assert str(sys.modules["corral.runner.engine"].__file__).startswith(src)  # the tree asked for
    chat = [engine.tokenize(f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n") for p in PROMPTS]
    repeat = engine.tokenize(f"<|im_start|>user\n{REPEAT}<|im_end|>\n<|im_start|>assistant\n")
    submitted: dict[str, float] = {}
    ttft: list[float] = []
    n_out, n = 0, 0

    def submit() -> None:
        nonlocal n
        spec = workload == "spec" and n % 2 == 0
        opts = GenerationOptions(temperature=0, num_predict=tokens, speculative=spec)
        rid = f"r{n}"
        engine.submit(rid, repeat if spec else chat[n % len(chat)], opts)
        submitted[rid] = time.perf_counter()
        n += 1

    def steps(until: float, refill: bool) -> None:
        nonlocal n_out
        while engine.active and time.perf_counter() < until:
            for ev in engine.step():
                if isinstance(ev, Token) and ev.id in submitted:
                    ttft.append(time.perf_counter() - submitted.pop(ev.id))
                elif isinstance(ev, (Done, Failed)):
                    submitted.pop(ev.id, None)
                    n_out += getattr(ev, "eval_count", 0)
                    if refill:
                        submit()

    for _ in range(slots):  # warm-up: one short round
        submit()
    steps(time.perf_counter() + 60, refill=False)
    ttft.clear()
    n_out = 0
    t0 = time.perf_counter()
    for _ in range(slots):
        submit()
    steps(t0 + (seconds if workload != "burst" else 600), refill=workload != "burst")
    elapsed = time.perf_counter() - t0
    engine.close()
    return {"tps": n_out / elapsed, "ttft_p50": statistics.median(ttft) if ttft else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", type=Path, required=True)
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--workloads", default="burst,closed,spec")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    from corral.models.store import ModelName, Store

    path = str(Store(args.models).model_file(ModelName.parse(args.model)))
    trees = {"after": str(Path(__file__).resolve().parents[1] / "src"), "before": str(args.baseline_src.resolve())}
    ctx = mp.get_context("spawn")
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for workload in args.workloads.split(","):
            for tree, src in trees.items():
                with ctx.Pool(1) as pool:
                    row = pool.apply(measure, (src, path, workload, args.seconds, args.tokens))
                rows.setdefault((workload, tree), []).append(row)
                print(f"  round {r + 1} {workload:6s} {tree:6s} {row['tps']:7.1f} tok/s  TTFT p50 "
                      f"{row['ttft_p50'] * 1e3:7.1f} ms  (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"{args.model}, 2 threads, {args.tokens} tokens, {args.rounds} rounds (median); "
          f"load {os.getloadavg()[0]:.2f}")
    for workload in args.workloads.split(","):
        a, b = rows[(workload, "after")], rows[(workload, "before")]
        tps = [x["tps"] / y["tps"] for x, y in zip(a, b, strict=True)]
        ttft = [x["ttft_p50"] / y["ttft_p50"] for x, y in zip(a, b, strict=True)]
        after, before = statistics.median(x["tps"] for x in a), statistics.median(x["tps"] for x in b)
        print(f"  {workload:6s} tok/s after {after:7.1f} before {before:7.1f}  "
              f"x{statistics.median(tps):.2f} {[round(t, 2) for t in tps]}   "
              f"TTFT p50 x{statistics.median(ttft):.2f} {[round(t, 2) for t in ttft]}")


if __name__ == "__main__":
    main()
