"""Continuous batching on the real models: concurrency, queueing past the slots, batch invariance
(in exact mode: the default fast kernels give up invariance for speed, runner/kernels.py)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MODELS, SMOL
from helpers import run_all, warm

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length."]


def test_two_streams_interleave(server):
    warm(server.url, SMOL)
    a, b = asyncio.run(run_all(server.url, SMOL, PROMPTS[:2], {"temperature": 0, "num_predict": 40}))
    # Batching, not turn-taking: each got tokens before the other finished.
    assert a["token_times"][0] < b["end"] and b["token_times"][0] < a["end"]
    assert a["final"]["eval_count"] == b["final"]["eval_count"] == 40


def test_four_slots_eight_clients(server):
    warm(server.url, SMOL)
    prompts = [PROMPTS[i % 4] for i in range(8)]
    results = asyncio.run(run_all(server.url, SMOL, prompts, {"temperature": 0, "num_predict": 24}))
    waited = [r for r in results if r["positions"]]
    assert len(waited) == 4  # 4 ran at once, 4 waited with a queue position
    assert sorted(r["positions"][0] for r in waited) == [1, 2, 3, 4]
    assert all(r["final"]["eval_count"] == 24 for r in results)
    # A waiting request started only after some running request finished.
    first_end = min(r["end"] for r in results if not r["positions"])
    assert all(r["token_times"][0] >= first_end - 0.05 for r in waited)


@pytest.fixture(scope="module")
def exact_server(start_server):
    return start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_EXACT="1")


@pytest.mark.parametrize("model", MODELS)
def test_batch_invariance_greedy(exact_server, model):
    server = exact_server
    warm(server.url, model)
    options = {"temperature": 0, "num_predict": 48}
    (alone,) = asyncio.run(run_all(server.url, model, PROMPTS[:1], options))
    together = asyncio.run(run_all(server.url, model, PROMPTS, options))
    assert alone["text"] and together[0]["text"] == alone["text"]
    # ...and the others ran alongside it, not before or after.
    assert all(r["token_times"][0] < together[0]["end"] for r in together[1:])


@pytest.mark.parametrize("model", MODELS)
def test_prefix_reuse_is_exact(start_server, model):
    """A slot keeps its last conversation's KV; a follow-up that shares the prefix reuses it and
    must answer exactly as a fresh slot does. No prompt cache here, so "fresh" is fresh; the
    reuse is checked on /metrics, not assumed."""
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_PROMPT_CACHE="0", CORRAL_EXACT="1")
    turn1 = [{"role": "user", "content": "Name three rivers in Europe."}]
    options = {"temperature": 0, "num_predict": 24}
    with server.client() as c:
        def chat(messages):
            r = c.post("/api/chat", json={"model": model, "messages": messages, "stream": False, "options": options})
            return r.json()

        def reused_tokens() -> float:
            line = next(line for line in c.get("/metrics").text.splitlines()
                        if line.startswith(f'corral_prompt_reused_tokens_total{{model="{model}"}}'))
            return float(line.split()[-1])

        first = chat(turn1)
        answer1 = first["message"]["content"]
        turn2 = turn1 + [{"role": "assistant", "content": answer1}, {"role": "user", "content": "Which is longest?"}]
        chat([{"role": "user", "content": "Unrelated."}])
        before = reused_tokens()
        fresh = chat(turn2)  # the slot holds the unrelated prompt: only a template's preamble to reuse
        after_fresh = reused_tokens()
        chat(turn1)
        before_reuse = reused_tokens()
        reused = chat(turn2)  # the slot holds turn 1 and its answer: most of turn 2's prompt is reused
        after_reuse = reused_tokens()
    assert fresh["message"]["content"] == reused["message"]["content"] and fresh["message"]["content"]
    # The second time, all of turn 1's prompt came from the slot (but the last tokens every prompt
    # decodes itself), more than the preamble an unrelated prompt shares.
    reused_fresh, reused_again = after_fresh - before, after_reuse - before_reuse
    assert reused_again >= first["prompt_eval_count"] - 2 and reused_again > reused_fresh, (reused_fresh, reused_again)
