"""Batch invariance of the engine on the real models, in this process (no HTTP, no pipe).

    python benchmarks/exactness.py probe [--model gemma3:270m]   # logits: one sequence alone vs beside k others
    python benchmarks/exactness.py greedy [--model gemma3:270m]  # greedy text: alone vs batched vs prefix reuse
    python benchmarks/exactness.py speed [--model gemma3:270m]   # prompt tok/s and C=8 generation tok/s

`probe` prefills 8 slots with different prompts, then decodes one generating token of slot 0
alone and beside slots 1..k (k = 1..7, one seq-ordered call, as the engine's step does), and
prints the max abs difference of slot 0's logits from the alone ones. `greedy` runs the engine's
own loop. Run it under another interpreter (a llama-cpp-python built with -DGGML_LLAMAFILE=OFF)
to compare builds; --tiled keeps ggml's tiled K-quant matmul on (what exact mode turns off,
runner/exactness.py) to measure what that costs and what it breaks. Not CI; short runs (about
a minute per model on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import llama_cpp as ll
import numpy as np

import corral.runner.engine as engine_module
from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.exactness import TILED_MATMUL_ENV
from corral.runner.protocol import Done, GenerationOptions, LoadConfig

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length.",
           "The history of the bicycle begins", "Here is a recipe for bread:",
           "Ten facts about the moon:", "Once upon a time, in a small village,"]
SLOTS = 8
QUIET = ll.llama_log_callback(lambda *_: None)  # kept alive: llama.cpp holds the pointer


def load(args: argparse.Namespace, slots: int = SLOTS) -> Engine:
    path = Store(args.models).model_file(ModelName.parse(args.model))
    return Engine(LoadConfig(str(path), n_slots=slots, n_ctx_slot=512, n_threads=args.threads))


def decode(engine: Engine, entries: list[tuple[int, int, int]]) -> None:
    """Decode (token, pos, seq) entries in one call, each with logits."""
    for i, (tok, pos, seq) in enumerate(entries):
        engine._tok[i], engine._pos[i], engine._seq[i], engine._logits[i] = tok, pos, seq, 1
    engine.batch.n_tokens = len(entries)
    assert ll.llama_decode(engine.ctx, engine.batch) == 0


def prefill(engine: Engine, tokens: list[int], seq: int, start: int = 0) -> np.ndarray:
    """Decode tokens at positions start.. of seq in one call; the last one's logits (a copy)."""
    n = len(tokens)
    engine._tok[:n], engine._pos[:n], engine._seq[:n] = tokens, np.arange(start, start + n), seq
    engine._logits[:n] = 0
    engine._logits[n - 1] = 1
    engine.batch.n_tokens = n
    assert ll.llama_decode(engine.ctx, engine.batch) == 0
    return engine._rows(n - 1).copy()


def probe(args: argparse.Namespace) -> None:
    engine = load(args)
    prompts = [engine.tokenize(p) for p in PROMPTS]
    last = []
    for seq, toks in enumerate(prompts):  # each prompt in its own call, as the engine prefills
        last.append(int(prefill(engine, toks, seq).argmax()))

    def step(k: int) -> np.ndarray:
        """Slot 0's logits for its next token decoded beside slots 1..k; the cells are removed after."""
        decode(engine, [(last[s], len(prompts[s]), s) for s in range(k + 1)])
        row = engine._rows(0).copy()
        for s in range(k + 1):
            ll.llama_memory_seq_rm(engine.memory, s, len(prompts[s]), -1)
        return row

    alone = step(0)
    print(f"{args.model}: slot 0's logits beside k others vs alone (max abs difference; argmax alone {alone.argmax()})")
    rows = {k: step(k) for k in range(1, SLOTS)}
    for k, row in rows.items():
        print(f"  k={k}: vs alone {np.abs(row - alone).max():.3g}   vs k=1 {np.abs(row - rows[1]).max():.3g}"
              f"   argmax {row.argmax()}")
    print(f"  alone again: {np.abs(step(0) - alone).max():.3g}")
    # Prefix reuse: 8 tokens generated one by one on slot 0, the same 8 as part of a prompt chunk
    # on slot 1; then the same 2-token piece on both (the engine decodes at least that much of a
    # reused prompt itself). The piece's logits must agree: the KV of a token may not depend on
    # whether it was generated or read in a prompt.
    toks, pos = [last[0]], len(prompts[0])
    for _ in range(8):
        decode(engine, [(toks[-1], pos, 0)])
        toks.append(int(engine._rows(0).argmax()))
        pos += 1
    piece = toks[-2:]
    prefix = prompts[0] + toks[:-2]
    ll.llama_memory_seq_rm(engine.memory, 0, len(prefix), -1)
    ll.llama_memory_seq_rm(engine.memory, 1, -1, -1)
    rows = [prefill(engine, (prefix + piece)[start:], seq, start) for seq, start in ((0, len(prefix)), (1, 0))]
    print(f"  a 2-token piece after 6 generated tokens vs after the same read as a prompt: "
          f"{np.abs(rows[0] - rows[1]).max():.3g}")
    engine.close()


def run_requests(engine: Engine, prompts: list[list[int]], n: int) -> tuple[list[list[int]], float]:
    """Greedy answers (token ids) of prompts run together; and generated tokens per second."""
    opts = GenerationOptions(temperature=0, num_predict=n)
    for i, p in enumerate(prompts):
        engine.submit(f"r{i}", p, opts, want_context=True)
    answers: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    t_gen = 0.0
    while engine.active:
        generating = all(not s.request.prefilling for s in engine.active)
        ts = time.perf_counter()
        for ev in engine.step():
            if isinstance(ev, Done):
                assert ev.context is not None
                answers[ev.id] = ev.context[len(prompts[int(ev.id[1:])]):]
        if generating:
            t_gen += time.perf_counter() - ts
    del t0
    out = [answers[f"r{i}"] for i in range(len(prompts))]
    return out, sum(len(a) for a in out) / t_gen if t_gen else 0.0


def first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), -1 if len(a) == len(b) else min(len(a), len(b)))


def greedy(args: argparse.Namespace) -> None:
    engine = load(args)
    prompts = [engine.tokenize(p) for p in PROMPTS]
    (alone,), _ = run_requests(engine, prompts[:1], args.tokens)
    print(f"{args.model}: {len(alone)} greedy tokens of prompt 0; first difference from alone (-1: none)")
    for k in range(1, SLOTS):
        together, _ = run_requests(engine, [prompts[0]] + [prompts[i] for i in range(1, k + 1)], args.tokens)
        print(f"  beside {k}: {first_diff(alone, together[0])}")
    # Prefix reuse: the slot now holds prompt 0 + its answer; ask it again with a longer prompt.
    follow = prompts[0] + alone[: len(alone) // 2]
    (reused,), _ = run_requests(engine, [follow], args.tokens)
    fresh_engine = load(args)
    (fresh,), _ = run_requests(fresh_engine, [follow], args.tokens)
    print(f"  prefix reuse ({engine.slots.reused_tokens} tokens reused) vs fresh: {first_diff(fresh, reused)}")
    engine.close()
    fresh_engine.close()


def speed(args: argparse.Namespace) -> None:
    engine = load(args)
    base = engine.tokenize(" ".join(PROMPTS) * 8)[:256]
    prompts = [engine.tokenize(p) for p in PROMPTS]
    run_requests(engine, prompts[:2], 8)  # warm up
    prompt_rates, gen_rates = [], []
    for r in range(args.rounds):
        # Prompt: 256 fresh tokens (a different first token each round: no prefix reuse).
        p = [base[0]] + [(base[1] + r) % engine.n_vocab] + base[2:]
        t0 = time.perf_counter()
        engine.submit("p", p, GenerationOptions(temperature=0, num_predict=1))
        while engine.active:
            engine.step()
        prompt_rates.append(len(p) / (time.perf_counter() - t0))
        _, rate = run_requests(engine, prompts, args.tokens)
        gen_rates.append(rate)
    print(f"{args.model}: prompt {statistics.median(prompt_rates):.0f} tok/s (256-token prompt), "
          f"C=8 generation {statistics.median(gen_rates):.0f} tok/s ({args.tokens} tokens each); "
          f"median of {args.rounds} rounds, {args.threads} threads")
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["probe", "greedy", "speed"])
    ap.add_argument("--model", default="gemma3:270m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiled", action="store_true", help="keep ggml's tiled K-quant matmul on")
    args = ap.parse_args()
    if args.tiled:
        os.environ[TILED_MATMUL_ENV] = "1"
        engine_module.pin_exact_kernels = lambda: None  # type: ignore[assignment]
    ll.llama_log_set(QUIET, None)
    {"probe": probe, "greedy": greedy, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
