"""Speculative decoding (prompt-lookup drafting) in the engine: single-stream tokens/s with it
off and on, on a workload whose answer repeats its prompt and one whose answer does not, in this
process (no HTTP), so a busy machine disturbs it less than a served run. Greedy; the answers are
compared token by token (they must be identical), and the draft acceptance rate is reported.

    PYTHONPATH=src python benchmarks/speculative.py [--model smollm2:135m] [--rounds 3] [--tokens 200]
    PYTHONPATH=src python benchmarks/speculative.py --agreement 24   # how often on != off, no timing

Off and on alternate round by round; the median over the rounds is reported. Not CI.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.protocol import Done, GenerationOptions, LoadConfig, Token

PARAGRAPH = ("The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the clockwork, "
             "polished the great lens until it shone, and lit the lamp that warned ships away from the rocks. "
             "In winter the storms came from the north and the waves broke over the gallery, but the light "
             "never failed. When the supply boat arrived each month, he traded letters with the captain and "
             "asked for news of the mainland, though he rarely wished to return there.")
CODE = '''def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)


def variance(values):
    m = mean(values)
    total = 0
    for value in values:
        total += (value - m) ** 2
    return total / len(values)
'''
WORKLOADS = {
    "repeat": f"Repeat this text exactly, word for word:\n\n{PARAGRAPH}",
    "code edit": f"Rename the variable `total` to `acc` in this Python code and print the whole code:\n\n{CODE}",
    "no repeat": "Write a short story about a dragon who learns to bake bread.",
}


def chat(text: str) -> str:
    # ChatML (smollm2's template)
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def run(engine: Engine, prompt: list[int], tokens: int, speculative: bool) -> tuple[str, int, float]:
    """(answer text, generated tokens, seconds from first token to done)."""
    opts = GenerationOptions(temperature=0, num_predict=tokens, speculative=speculative)
    engine.submit("r", prompt, opts)
    text, count, t_first = [], 0, 0.0
    while engine.active:
        for ev in engine.step():
            if isinstance(ev, Token):
                text.append(ev.text)
                t_first = t_first or time.perf_counter()
            elif isinstance(ev, Done):
                count = ev.eval_count
    return "".join(text), count, time.perf_counter() - t_first


def answer_tokens(engine: Engine, prompt: list[int], tokens: int, speculative: bool) -> list[int]:
    opts = GenerationOptions(temperature=0, num_predict=tokens, speculative=speculative)
    engine.submit("r", prompt, opts, want_context=True)
    while engine.active:
        for ev in engine.step():
            if isinstance(ev, Done):
                return (ev.context or [])[len(prompt):]
    return []


def agreement(engine: Engine, n: int, tokens: int) -> None:
    """How often the greedy answer with drafting differs from the one without, over n prompts
    (the built-in bench set plus the workloads above), and where it first differs."""
    from corral.bench.prompts import builtin_prompts

    texts = list(WORKLOADS.values()) + builtin_prompts()[:max(n - len(WORKLOADS), 0)]
    differ, firsts, total = 0, [], 0
    for text in texts[:n]:
        prompt = engine.tokenize(chat(text))
        off, on = answer_tokens(engine, prompt, tokens, False), answer_tokens(engine, prompt, tokens, True)
        total += len(off)
        if off != on:
            differ += 1
            firsts.append(next((i for i, (a, b) in enumerate(zip(off, on)) if a != b), min(len(off), len(on))))
    print(f"{differ} of {len(texts[:n])} answers differ with drafting on ({total} tokens generated with it off); "
          f"first differing token at {sorted(firsts)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-max", type=int, default=10)
    ap.add_argument("--exact", action="store_true", help="exact (batch-invariant) kernels; default: fast")
    ap.add_argument("--agreement", type=int, default=0, help="compare answers on N prompts, no timing")
    args = ap.parse_args()
    path = Store(args.models).model_file(ModelName.parse(args.model))
    engine = Engine(LoadConfig(str(path), n_slots=1, n_ctx_slot=2048, n_threads=args.threads,
                               draft_max=args.draft_max, exact=args.exact))
    if args.agreement:
        agreement(engine, args.agreement, args.tokens)
        engine.close()
        return
    print(f"{args.model}, C=1, {args.threads} thread(s), draft_max {args.draft_max}, "
          f"{args.rounds} rounds x {args.tokens} tokens, median tokens/s")
    for name, text in WORKLOADS.items():
        prompt = engine.tokenize(chat(text))
        run(engine, prompt, 4, False)  # warm: the prompt is a cached prefix for every run after
        speed: dict[bool, list[float]] = {False: [], True: []}
        answers: dict[bool, str] = {}
        drafted = accepted = 0
        for _ in range(args.rounds):
            for on in (False, True):
                d0, a0 = engine.drafted_tokens, engine.accepted_tokens
                answer, count, seconds = run(engine, prompt, args.tokens, on)
                drafted, accepted = drafted + engine.drafted_tokens - d0, accepted + engine.accepted_tokens - a0
                speed[on].append(count / seconds)
                if answers.setdefault(on, answer) != answer:
                    print(f"  {name}: speculative={on} gave different answers across rounds")
        off, on = statistics.median(speed[False]), statistics.median(speed[True])
        same = "identical" if answers[False] == answers[True] else "DIFFERENT"
        rate = accepted / drafted if drafted else 0.0
        print(f"  {name:10s} off {off:6.1f}  on {on:6.1f}  x{on / off:.2f}  accepted {accepted}/{drafted} "
              f"({rate:.0%})  answers {same}  ({count} tokens)")
        if same != "identical":
            print("    off:", repr(answers[False][:300]), "\n    on: ", repr(answers[True][:300]))
    engine.close()


if __name__ == "__main__":
    main()
