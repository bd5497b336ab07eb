"""Speculative decoding (prompt-lookup drafting) on the real model: a greedy answer with drafting
on is the answer with it off — text, done_reason, eval_count, stop strings and num_predict — and
the drafts really ran (counted on /metrics). See docs/PERFORMANCE.md's speculative section for
the one case where on and off can part (answers with no repetition, measured)."""

from __future__ import annotations

import asyncio

import httpx
import ollama
import pytest
from conftest import SMOL
from helpers import stream_generate, warm

PARAGRAPH = ("The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the clockwork, "
             "polished the great lens until it shone, and lit the lamp that warned ships away from the rocks. "
             "In winter the storms came from the north and the waves broke over the gallery, but the light "
             "never failed.")
REPEAT = f"Repeat this text exactly, word for word:\n\n{PARAGRAPH}"
GREEDY = {"temperature": 0, "num_predict": 96}


def drafted(url: str) -> tuple[float, float]:
    """(drafted, accepted) tokens so far for the test model, from /metrics."""
    values = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for name in ("corral_draft_tokens", "corral_draft_accepted_tokens"):
            if line.startswith(f'{name}_total{{model="{SMOL}"}}') or line.startswith(f'{name}{{model="{SMOL}"}}'):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values.get("corral_draft_tokens", 0.0), values.get("corral_draft_accepted_tokens", 0.0)


def generate(client: ollama.Client, prompt: str, **options) -> ollama.GenerateResponse:
    return client.generate(SMOL, prompt, options={**GREEDY, **options})


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    warm(server.url, SMOL)
    return ollama.Client(host=server.url)


def test_repeating_answer_is_identical_and_drafts_are_accepted(server, client):
    off = generate(client, REPEAT)
    before = drafted(server.url)
    on = generate(client, REPEAT, speculative=True)
    after = drafted(server.url)
    assert on.response == off.response and PARAGRAPH[:60] in off.response
    assert (on.done_reason, on.eval_count) == (off.done_reason, off.eval_count)
    proposed, agreed = after[0] - before[0], after[1] - before[1]
    # The answer repeats the prompt: most of it came from accepted drafts.
    assert agreed >= 0.5 * off.eval_count and agreed <= proposed


def test_streamed_answer_is_identical(server, client):
    off = generate(client, REPEAT)
    chunks = list(client.generate(SMOL, REPEAT, options={**GREEDY, "speculative": True}, stream=True))
    # Several chunks (each holds a stream interval's tokens), the same text as the whole answer.
    assert len(chunks) > 1 and "".join(c.response for c in chunks) == off.response
    assert chunks[-1].done and chunks[-1].eval_count == off.eval_count


def test_num_predict_cuts_inside_an_accepted_run(server, client):
    # Drafts are cut to what num_predict leaves, so the answer stops at exactly that many tokens.
    for n in (1, 2, 13):
        off = generate(client, REPEAT, num_predict=n)
        on = generate(client, REPEAT, num_predict=n, speculative=True)
        assert (on.response, on.eval_count, on.done_reason) == (off.response, n, "length")


def test_stop_string_inside_an_accepted_run(server, client):
    for stop in ("great lens", "ships"):
        off = generate(client, REPEAT, stop=[stop])
        on = generate(client, REPEAT, stop=[stop], speculative=True)
        assert stop not in on.response and on.response == off.response
        assert (on.done_reason, on.eval_count) == (off.done_reason, off.eval_count) and on.done_reason == "stop"


def test_logprobs_turn_drafting_off(server, client):
    # A verified position's logits come from multi-token kernels (last digits differ, measured
    # 0.467 vs 0.508 for one token), so a request asking for log-probabilities never drafts.
    off = client.generate(SMOL, REPEAT, options={**GREEDY, "num_predict": 24}, logprobs=True, top_logprobs=2)
    before = drafted(server.url)
    on = client.generate(SMOL, REPEAT, options={**GREEDY, "num_predict": 24, "speculative": True},
                         logprobs=True, top_logprobs=2)
    assert on.response == off.response and drafted(server.url) == before
    assert [(lp.token, lp.logprob) for lp in on.logprobs] == [(lp.token, lp.logprob) for lp in off.logprobs]


@pytest.mark.timeout(900)  # four generations: 165 s to 490 s on this shared 2-core machine
def test_with_a_concurrent_neighbour(server):
    warm(server.url, SMOL)
    neighbour = "Write a long story about a dragon."

    async def both() -> tuple[dict, dict]:
        return await asyncio.gather(stream_generate(server.url, SMOL, REPEAT, {**GREEDY, "speculative": True}),
                                    stream_generate(server.url, SMOL, neighbour, GREEDY))

    alone_off = asyncio.run(stream_generate(server.url, SMOL, REPEAT, GREEDY))
    neighbour_alone = asyncio.run(stream_generate(server.url, SMOL, neighbour, GREEDY))
    before = drafted(server.url)
    spec, other = asyncio.run(both())
    assert drafted(server.url)[1] > before[1]
    assert spec["text"] == alone_off["text"] and other["text"] == neighbour_alone["text"]
    assert spec["final"]["eval_count"] == alone_off["final"]["eval_count"]
    # They ran side by side: each had tokens before the other finished.
    assert spec["token_times"][0] < other["end"] and other["token_times"][0] < spec["end"]


def test_sampled_requests_never_draft(server, client):
    before = drafted(server.url)
    r = client.generate(SMOL, REPEAT, options={"temperature": 0.7, "seed": 1, "num_predict": 24, "speculative": True})
    assert r.eval_count == 24 and drafted(server.url) == before


def test_bad_speculative_option_is_a_400(server):
    r = httpx.post(server.url + "/api/generate", json={"model": SMOL, "prompt": "hi",
                                                      "options": {"speculative": "yes"}}, timeout=30)
    assert r.status_code == 400 and "speculative" in r.json()["error"]


@pytest.mark.timeout(900)  # a server of its own
def test_server_wide_default_and_per_request_off(start_server):
    server = start_server(CORRAL_SPECULATIVE="ngram", OLLAMA_NUM_PARALLEL="1")
    warm(server.url, SMOL)
    c = ollama.Client(host=server.url)
    on = generate(c, REPEAT, num_predict=48)
    after_on = drafted(server.url)
    off = generate(c, REPEAT, num_predict=48, speculative=False)
    assert after_on[1] > 0 and drafted(server.url) == after_on
    assert on.response == off.response
