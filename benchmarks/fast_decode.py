"""Fast mode's shared decode (prompts, drafts and streams in one llama_decode per step) against
another source tree's engine, in-process (no HTTP, no pipe), SmolLM2 greedy, 2 threads; and the
runner's host time per step (issue 14: the `host` workload).

    python benchmarks/fast_decode.py --baseline-src /tmp/decode-before/src [--rounds 2] [--seconds 20]
    python benchmarks/fast_decode.py --workloads host [--exact] [--tokens 128] [--baseline-src ...]

Workloads, each in a fresh child process per tree, trees alternating round by round:
  burst     8 chats submitted at once, 64 tokens each (all prompts prefill in the same step)
  closed    8 closed-loop clients for --seconds (a finished request is replaced at once, so
            prompts arrive while the others generate), 64 tokens each
  spec      closed loop of 4: two speculative requests that repeat their prompt, two plain ones
  host      8 chats at once, --tokens each, --bursts times (3); of the steps where all 8 generate and no
            prompt is decoded: host ms per step (the engine thread's CPU outside llama_decode,
            time.thread_time, plus encoding the step's events as main.py does; steady on a busy
            machine), its share of the step's wall time, and decode ms per step (wall)
Reports output tok/s and TTFT p50 (submit to first token, in engine steps' wall time) per tree,
the median over rounds and the ratio. Without --baseline-src only this tree runs. Not CI; a shared
machine makes it noisy (the load is printed).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length.",
           "Tell me about the history of bread.", "How do airplanes fly? Explain it well.",
           "Describe a walk through a forest in autumn.", "Write a letter to a friend about a trip."]
REPEAT = ("Repeat this text exactly, word for word: The lighthouse keeper climbed the spiral stairs every "
          "evening at dusk. He wound the clockwork, polished the great lens until it shone, and lit the lamp.")


def host_time(engine: Any, chat: list[list[int]], tokens: int, bursts: int = 3) -> dict:
    """`bursts` x 8 chats at once; per step where all 8 generate and no prompt is decoded: the
    engine thread's CPU outside llama_decode (+ encoding the events, as main.py's send), and
    wall times. Medians over those steps."""
    import llama_cpp as ll

    from corral.runner import protocol as p
    from corral.runner.protocol import Done, GenerationOptions

    inside = [0, 0, 0]  # llama_decode's wall, this thread's CPU in it (ns), calls
    real = ll.llama_decode

    def timed(ctx: Any, batch: Any) -> int:
        w, t = time.perf_counter_ns(), time.thread_time_ns()
        rc = real(ctx, batch)
        inside[0] += time.perf_counter_ns() - w
        inside[1] += time.thread_time_ns() - t
        inside[2] += 1
        return rc

    ll.llama_decode = timed
    sink = open(os.devnull, "wb", buffering=0)  # noqa: SIM115 (held for the run)
    host: list[int] = []
    wall: list[int] = []
    dec: list[int] = []
    calls: list[int] = []  # llama_decode calls per step: one, in both modes (exact: the NEXT pieces share it)
    n_out, elapsed = 0, 0.0
    for b in range(bursts + 1):  # the first is a warm-up
        for i in range(8):
            engine.submit(f"b{b}r{i}", chat[i % len(chat)], GenerationOptions(temperature=0, num_predict=tokens))
        t_start = time.perf_counter()
        while engine.active:
            full = len(engine.active) == 8 and not any(s.request.prefilling for s in engine.active)
            evaluated, inside[:] = engine.evaluated_tokens, [0, 0, 0]
            w, t = time.perf_counter_ns(), time.thread_time_ns()
            events = engine.step()
            if events:
                sink.write(b"".join(p.encode(e) for e in events))
            w, t = time.perf_counter_ns() - w, time.thread_time_ns() - t
            n_out += sum(e.eval_count for e in events if isinstance(e, Done)) if b else 0
            if b and full and engine.evaluated_tokens == evaluated:
                host.append(t - inside[1])
                wall.append(w)
                dec.append(inside[0])
                calls.append(inside[2])
        elapsed += (time.perf_counter() - t_start) if b else 0.0
    sink.close()
    ms = lambda xs: statistics.median(xs) / 1e6
    return {"tps": n_out / elapsed, "ttft_p50": float("nan"), "host_ms": ms(host), "wall_ms": ms(wall),
            "decode_ms": ms(dec), "share": statistics.median(h / w for h, w in zip(host, wall, strict=True)),
            "steps": len(host), "calls": max(calls)}


def measure(src: str, path: str, workload: str, seconds: float, tokens: int, exact: bool = False,
            bursts: int = 3) -> dict:
    sys.path.insert(0, src)
    from corral.runner.engine import Engine
    from corral.runner.protocol import Done, Failed, GenerationOptions, LoadConfig, Token

    slots = 4 if workload == "spec" else 8
    engine = Engine(LoadConfig(path, n_slots=slots, n_ctx_slot=2048, n_threads=2, prompt_cache_bytes=0,
                               exact=exact))
    assert str(sys.modules["corral.runner.engine"].__file__).startswith(src)  # the tree asked for
    chat = [engine.tokenize(f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n") for p in PROMPTS]
    if workload == "host":
        row = host_time(engine, chat, tokens, bursts)
        engine.close()
        return row
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


def line(row: dict) -> str:
    if "host_ms" in row:
        return (f"{row['tps']:7.1f} tok/s  host {row['host_ms']:.3f} ms/step ({row['share'] * 100:.2f} % of "
                f"{row['wall_ms']:.1f} ms; decode {row['decode_ms']:.1f} ms; {row['steps']} steps, "
                f"<= {row['calls']} decode a step)")
    return f"{row['tps']:7.1f} tok/s  TTFT p50 {row['ttft_p50'] * 1e3:7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", type=Path, help="another source tree to compare with")
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--workloads", default="burst,closed,spec")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--exact", action="store_true", help="exact mode's engine (CORRAL_EXACT=1)")
    ap.add_argument("--bursts", type=int, default=3, help="host: bursts of 8 measured (after one warm-up)")
    args = ap.parse_args()
    from corral.models.store import ModelName, Store

    path = str(Store(args.models).model_file(ModelName.parse(args.model)))
    trees = {"after": str(Path(__file__).resolve().parents[1] / "src")}
    if args.baseline_src:
        trees["before"] = str(args.baseline_src.resolve())
    ctx = mp.get_context("spawn")
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for workload in args.workloads.split(","):
            for tree, src in trees.items():
                with ctx.Pool(1) as pool:
                    row = pool.apply(measure, (src, path, workload, args.seconds, args.tokens, args.exact,
                                                 args.bursts))
                rows.setdefault((workload, tree), []).append(row)
                print(f"  round {r + 1} {workload:6s} {tree:6s} {line(row)}  (load {os.getloadavg()[0]:.1f})",
                      flush=True)
    print(f"{args.model}, {'exact' if args.exact else 'fast'} mode, 2 threads, {args.tokens} tokens, "
          f"{args.rounds} rounds (median); load {os.getloadavg()[0]:.2f}")
    med = lambda xs, key: statistics.median(x[key] for x in xs)
    for workload in args.workloads.split(","):
        a = rows[(workload, "after")]
        if workload == "host":
            print(f"  host   {'after':6s} {med(a, 'tps'):7.1f} tok/s  host {med(a, 'host_ms'):.3f} ms/step "
                  f"({med(a, 'share') * 100:.2f} %), step {med(a, 'wall_ms'):.1f} ms")
        if "before" not in trees:
            continue
        b = rows[(workload, "before")]
        tps = [x["tps"] / y["tps"] for x, y in zip(a, b, strict=True)]
        if workload == "host":
            host = [x["host_ms"] / y["host_ms"] for x, y in zip(a, b, strict=True)]
            print(f"  host   {'before':6s} {med(b, 'tps'):7.1f} tok/s  host {med(b, 'host_ms'):.3f} ms/step "
                  f"({med(b, 'share') * 100:.2f} %), step {med(b, 'wall_ms'):.1f} ms;  host after/before "
                  f"x{statistics.median(host):.2f}, tok/s x{statistics.median(tps):.2f} {[round(t, 2) for t in tps]}")
            continue
        ttft = [x["ttft_p50"] / y["ttft_p50"] for x, y in zip(a, b, strict=True)]
        print(f"  {workload:6s} tok/s after {med(a, 'tps'):7.1f} before {med(b, 'tps'):7.1f}  "
              f"x{statistics.median(tps):.2f} {[round(t, 2) for t in tps]}   "
              f"TTFT p50 x{statistics.median(ttft):.2f} {[round(t, 2) for t in ttft]}")


if __name__ == "__main__":
    main()
