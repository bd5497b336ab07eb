"""CORRAL_STREAM_INTERVAL on the real engine (smollm2:135m) through the official clients: fewer,
larger chunks after a first chunk that holds the first token alone, the same text and logprobs
as the whole reply, and token-by-token streaming when it is off (0; the default is 50 ms)."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import SMOL

PROMPT = "Describe the sea in a few sentences."
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 24}
N = 24


@pytest.fixture(scope="module")
def coalescing(start_server):
    # Exact mode: greedy output is then identical after prefix reuse, so the streamed and the
    # whole reply of the same prompt must match byte for byte. 1 s (the most allowed): tokens
    # are merged even when a busy machine makes each one slow (no assertion here is on timing).
    return start_server(CORRAL_STREAM_INTERVAL="1s", CORRAL_EXACT="1", OLLAMA_NUM_PARALLEL="2")


def _openai_stream(url: str, max_tokens: int) -> tuple[list[str], int]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    chunks, tokens = [], 0
    for chunk in client.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            chunks.append(chunk.choices[0].delta.content)
    return chunks, tokens


def test_first_token_alone_then_coalesced_chunks_with_the_same_text(coalescing):
    client = openai.OpenAI(base_url=coalescing.url + "/v1", api_key="x")
    first = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": PROMPT}],
                                           temperature=0, max_tokens=1).choices[0].message.content
    whole = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": PROMPT}],
                                           temperature=0, max_tokens=N).choices[0].message.content
    chunks, tokens = _openai_stream(coalescing.url, N)
    assert chunks[0] == first  # the first token is never held
    assert "".join(chunks) == whole
    assert tokens == N and len(chunks) < tokens, (len(chunks), tokens)


def test_coalesced_logprobs_match_the_whole_reply(coalescing):
    body = {"model": SMOL, "prompt": PROMPT, "options": GREEDY, "logprobs": True, "top_logprobs": 2}
    with coalescing.client() as c:
        whole = c.post("/api/generate", json={**body, "stream": False}).json()
        with c.stream("POST", "/api/generate", json=body) as r:
            chunks = [json.loads(line) for line in r.iter_lines() if line]
    assert len(chunks) - 1 < whole["eval_count"]  # the last chunk is the stats object
    assert [e for ch in chunks for e in ch.get("logprobs", [])] == whole["logprobs"]
    for ch in chunks[:-1]:
        assert "".join(e["token"] for e in ch["logprobs"]) == ch["response"]


def test_off_every_token_its_own_chunk(start_server):
    server = start_server(CORRAL_STREAM_INTERVAL="0")
    chunks, tokens = _openai_stream(server.url, N)
    # One chunk per token; a token that ends inside a UTF-8 character waits for the next one.
    assert tokens == N and len(chunks) >= tokens - 2, (len(chunks), tokens)
