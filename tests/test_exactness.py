"""Exact mode on both real models: greedy output alone = beside 7 others (8 token rows in a
decode, where ggml's tiled K-quant matmul would take over: runner/exactness.py), and a
follow-up that reuses a slot's generated tokens = the same follow-up on a fresh slot."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import MODELS
from helpers import run_all, warm

from corral.runner.exactness import llamafile_built

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length.",
           "The history of the bicycle begins", "Here is a recipe for bread:",
           "Ten facts about the moon:", "Once upon a time, in a small village,"]
GREEDY = {"temperature": 0, "num_predict": 48}


@pytest.fixture(scope="module")
def eight_slots(start_server):
    return start_server(OLLAMA_NUM_PARALLEL="8", CORRAL_EXACT="1")


@pytest.mark.parametrize("model", MODELS)
def test_eight_streams_match_alone(eight_slots, model):
    warm(eight_slots.url, model)
    (alone,) = asyncio.run(run_all(eight_slots.url, model, PROMPTS[:1], GREEDY))
    together = asyncio.run(run_all(eight_slots.url, model, PROMPTS, GREEDY))
    assert alone["final"]["eval_count"] == 48
    assert [r["error"] for r in together] == [None] * 8
    assert together[0]["text"] == alone["text"]
    # All eight generated at once (so decodes held 8 tokens), not one after another.
    assert all(r["token_times"][0] < together[0]["end"] for r in together[1:])
    assert not any(r["positions"] for r in together)


@pytest.mark.parametrize("model", MODELS)
def test_reused_answer_is_exact(start_server, model):
    """/api/generate's `context` carries the answer's tokens; a follow-up on the same slot reuses
    the slot's KV, a fresh slot reads them as a prompt. Same text. With llamafile's tinyBLAS in the
    build, a generated token's K/V differ from a prompt token's, so exact mode keeps only the prompt
    in the slot (the answer is read again); without it, the answer's KV is reused too."""
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_PROMPT_CACHE="0", CORRAL_EXACT="1")
    metric = f'corral_prompt_reused_tokens_total{{model="{model}"}}'
    body = {"model": model, "stream": False, "options": {"temperature": 0, "num_predict": 32}}

    def generate(prompt: str, context: list[int] | None = None) -> dict:
        r = httpx.post(server.url + "/api/generate", json={**body, "prompt": prompt, "context": context},
                       timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    def reused_tokens() -> float:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        return float(next(line for line in text.splitlines() if line.startswith(metric)).split()[-1])

    first = generate("Ten facts about the moon:\n1.")
    follow = " Now ten facts about the sun:\n1."
    before = reused_tokens()
    reused = generate(follow, first["context"])
    reused_count = reused_tokens() - before
    generate("Unrelated text about cooking.")  # the slot now holds something else
    fresh = generate(follow, first["context"])
    assert reused["response"] and reused["response"] == fresh["response"]
    # The reuse happened: the slot's KV served the first prompt (and its answer, without tinyBLAS).
    kept = first["prompt_eval_count"] if llamafile_built() else len(first["context"])
    assert first["eval_count"] == 32 and reused_count >= kept - 2, reused_count
