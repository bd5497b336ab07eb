"""Speculative decoding with a draft model in the engine (no HTTP): single-stream tokens/s and
draft acceptance with no draft, with the model drafting for itself (100 % acceptance: the
mechanism's overhead, since the draft costs as much as the model), and with random 2-layer,
64-wide llamas sharing its vocabulary: a "sure" one (a large output head: its drafts pass p_min
and ~all fail: the cost of failed verifications) and an "unsure" one (near-uniform: p_min stops
every draft: the cost of a draft model that never helps). Greedy; every answer is compared token
by token with the no-draft answer.

    PYTHONPATH=src python benchmarks/draft_model.py [--rounds 2] [--tokens 128] [--draft-num-predict 4]

Configurations alternate round by round; the median is reported. Not CI.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from corral.bench.random_gguf import write_random_llama
from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.protocol import Done, GenerationOptions, LoadConfig

PROMPT = ("<|im_start|>user\nWrite a short story about a dragon who learns to bake bread.<|im_end|>\n"
          "<|im_start|>assistant\n")


def run(engine: Engine, prompt: list[int], tokens: int, k: int) -> tuple[list[int], float]:
    """(answer tokens, seconds from the first token to done)."""
    engine.submit("r", prompt, GenerationOptions(temperature=0, num_predict=tokens, draft_num_predict=k),
                  want_context=True)
    t_first = 0.0
    while engine.active:
        for ev in engine.step():
            t_first = t_first or time.perf_counter()
            if isinstance(ev, Done):
                return (ev.context or [])[len(prompt):], time.perf_counter() - t_first
    return [], 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-num-predict", type=int, default=4)
    args = ap.parse_args()
    smol = Store(args.models, sweep=False).model_file(ModelName.parse("smollm2:135m"))
    folder = Path(tempfile.mkdtemp())
    write_random_llama(smol, folder / "sure.gguf", embd_scale=1.0)
    write_random_llama(smol, folder / "unsure.gguf")
    drafts = {"no draft": "", "self draft": str(smol), "random sure": str(folder / "sure.gguf"),
              "random unsure": str(folder / "unsure.gguf")}
    engines = {name: Engine(LoadConfig(str(smol), n_slots=1, n_ctx_slot=2048, n_threads=args.threads,
                                       draft_model_path=path)) for name, path in drafts.items()}
    prompt = engines["no draft"].tokenize(PROMPT)
    for engine in engines.values():
        run(engine, prompt, 4, args.draft_num_predict)  # warm: the prompt is a cached prefix after
    speed: dict[str, list[float]] = {name: [] for name in drafts}
    answers: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            answer, seconds = run(engine, prompt, args.tokens, args.draft_num_predict)
            speed[name].append(len(answer) / seconds)
            answers.setdefault(name, answer)
    print(f"smollm2:135m, C=1, {args.threads} threads, draft_num_predict {args.draft_num_predict}, "
          f"{args.rounds} rounds x {args.tokens} tokens, median tokens/s")
    base = statistics.median(speed["no draft"])
    for name, engine in engines.items():
        tok_s = statistics.median(speed[name])
        rate = engine.accepted_tokens / engine.drafted_tokens if engine.drafted_tokens else 0.0
        same = "identical" if answers[name] == answers["no draft"] else "DIFFERENT"
        print(f"  {name:13s} {tok_s:6.1f} tok/s  x{tok_s / base:.2f}  accepted {engine.accepted_tokens}/"
              f"{engine.drafted_tokens} ({rate:.0%})  answer {same}")
        engine.close()


if __name__ == "__main__":
    main()
