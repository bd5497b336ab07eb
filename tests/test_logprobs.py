"""logprobs / top_logprobs: Ollama's /api/generate and /api/chat, OpenAI's chat and completions,
on the real engine (smollm2:135m) and through the official clients; and the pure parts (the
log-softmax, which text chunk carries a token's entry, the wire)."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import ollama
import openai
import pytest
from conftest import SMOL

from corral.runner import protocol as p
from corral.runner.logprobs import Logprobs, log_softmax_at
from corral.runner.textstream import TextStream

# Greedy means the raw argmax only without Ollama's default repeat penalty (the logprobs are the
# raw logits', before any penalty, as Ollama's).
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 16}
PROMPT = "Write one sentence about the sea."


# -- pure ---------------------------------------------------------------------------------------

def test_log_softmax_matches_the_definition():
    rng = np.random.default_rng(0)
    row = (rng.standard_normal(5000) * 4).astype(np.float32)
    row[17] = row[99] = row.max() + 1  # a tie at the top: the lower id comes first
    logprob, top = log_softmax_at(row, 99, 5)
    exact = row.astype(np.float64) - np.log(np.exp(row.astype(np.float64)).sum())
    assert logprob == pytest.approx(exact[99], abs=1e-5)
    assert [i for i, _ in top] == list(np.argsort(-exact, kind="stable")[:5])
    assert [lp for _, lp in top] == pytest.approx(sorted(exact, reverse=True)[:5], abs=1e-5)
    assert log_softmax_at(row, 3, 0)[1] == []


def _feed(pieces: list[bytes], stop: list[str]) -> tuple[str, list[p.TokenLogprob]]:
    """Run pieces through a TextStream and a Logprobs as the engine does; the text sent and the
    entries sent, in order."""
    row = np.zeros(len(pieces), np.float32)
    stream, lp = TextStream(stop), Logprobs(0, lambda t: pieces[t])
    text, entries = "", []
    for token, piece in enumerate(pieces):
        out = stream.feed(piece)
        lp.add(row, token)
        if out or stream.stopped:
            entries += lp.sent(out, stream.stopped)
        text += out
        if stream.stopped:
            return text, entries
    tail = stream.flush()
    return text + tail, entries + lp.flush()


def test_entries_follow_the_text_they_complete():
    e_acute = "é".encode()
    text, entries = _feed([b"caf", e_acute[:1], e_acute[1:], b"!"], [])
    assert text == "café!"
    assert [e.token for e in entries] == ["caf", "", "é", "!"]
    assert b"".join(bytes(e.bytes) for e in entries) == text.encode()
    # A stop string spanning tokens: the token that began it is counted, the rest is not.
    text, entries = _feed([b"one", b" two<", b"|end", b"|> three"], ["<|end|>"])
    assert text == "one two"
    assert [e.token for e in entries] == ["one", " two<"]
    # Cut off in the middle of a character: the replacement character the text ends with.
    text, entries = _feed([b"a", e_acute[:1]], [])
    assert text == "a\ufffd" and "".join(e.token for e in entries) == text


def test_token_logprobs_round_trip_the_wire():
    top = (p.TokenLogprob("b", -1.5, (98,)),)
    msg = p.Token("r1", "a", [p.TokenLogprob("a", -0.25, (97,), top)])
    assert p.decode_up(p.encode(msg)) == msg
    plain = p.encode(p.Token("r1", "a"))
    assert b"logprobs" not in plain and p.decode_up(plain) == p.Token("r1", "a")


# -- live: Ollama's API -------------------------------------------------------------------------

def _check(entries: list[dict], text: str, eval_count: int, top: int) -> None:
    """One entry per generated token, each a log-probability, its bytes its text, the greedy
    token the most likely one, and the tokens together the reply."""
    assert len(entries) == eval_count > 0
    assert "".join(e["token"] for e in entries) == text
    for e in entries:
        assert e["logprob"] <= 0
        assert bytes(e.get("bytes", [])).decode() == e["token"]
        assert len(e.get("top_logprobs", [])) == top
        if top:
            alternatives = e["top_logprobs"]
            assert e["logprob"] == max(a["logprob"] for a in alternatives)
            assert [a["logprob"] for a in alternatives] == sorted((a["logprob"] for a in alternatives), reverse=True)
            assert sum(math.exp(a["logprob"]) for a in alternatives) <= 1 + 1e-6


def _stream(c: httpx.Client, path: str, body: dict) -> list[dict]:
    with c.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


@pytest.mark.parametrize("top", [0, 3])
def test_generate(server, top):
    body = {"model": SMOL, "prompt": PROMPT, "options": GREEDY, "logprobs": True, "top_logprobs": top}
    with server.client() as c:
        whole = c.post("/api/generate", json={**body, "stream": False}).json()
        _check(whole["logprobs"], whole["response"], whole["eval_count"], top)
        chunks = _stream(c, "/api/generate", body)
    # Streamed: each chunk carries the entries of the text it sends, the same as the whole reply.
    streamed = [e for ch in chunks for e in ch.get("logprobs", [])]
    assert streamed == whole["logprobs"]
    for ch in chunks[:-1]:
        assert "".join(e["token"] for e in ch.get("logprobs", [])) == ch["response"]
    assert "logprobs" not in chunks[-1] and chunks[-1]["done"]


def test_chat(server):
    body = {"model": SMOL, "messages": [{"role": "user", "content": PROMPT}], "options": GREEDY,
            "logprobs": True, "top_logprobs": 5}
    with server.client() as c:
        whole = c.post("/api/chat", json={**body, "stream": False}).json()
        _check(whole["logprobs"], whole["message"]["content"], whole["eval_count"], 5)
        chunks = _stream(c, "/api/chat", body)
    streamed = [e for ch in chunks for e in ch.get("logprobs", [])]
    assert [e["token"] for e in streamed] == [e["token"] for e in whole["logprobs"]]
    _check(streamed, "".join(ch["message"]["content"] for ch in chunks), chunks[-1]["eval_count"], 5)


def test_sampled_tokens_have_raw_logit_logprobs(server):
    """Sampling at a temperature does not change the numbers (they are the raw logits', as
    Ollama's): the first token's logprob is the same as under greedy decoding when the tokens agree."""
    body = {"model": SMOL, "prompt": PROMPT, "stream": False, "logprobs": True, "top_logprobs": 20}
    with server.client() as c:
        greedy = c.post("/api/generate", json={**body, "options": {"temperature": 0, "num_predict": 1}}).json()
        hot = c.post("/api/generate", json={**body, "options": {"temperature": 1.5, "seed": 7, "num_predict": 1}}).json()
    alternatives = {a["token"]: a["logprob"] for a in greedy["logprobs"][0]["top_logprobs"]}
    first = hot["logprobs"][0]
    assert first["top_logprobs"] == greedy["logprobs"][0]["top_logprobs"]
    if first["token"] in alternatives:
        assert first["logprob"] == pytest.approx(alternatives[first["token"]], abs=1e-5)


def test_no_logprobs_unless_asked(server):
    with server.client() as c:
        r = c.post("/api/generate", json={"model": SMOL, "prompt": PROMPT, "options": GREEDY, "stream": False,
                                          "top_logprobs": 3}).json()
        chunks = _stream(c, "/api/chat", {"model": SMOL, "messages": [{"role": "user", "content": PROMPT}],
                                          "options": GREEDY})
    assert r["response"] and "logprobs" not in r
    assert not any("logprobs" in ch for ch in chunks)


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
@pytest.mark.parametrize("top", [-1, 21])
def test_top_logprobs_out_of_range(server, path, top):
    body = {"model": SMOL, "prompt": "x", "messages": [{"role": "user", "content": "x"}], "top_logprobs": top}
    with server.client() as c:
        r = c.post(path, json=body)
        # Checked before the model is looked up, as Ollama does.
        missing = c.post(path, json={**body, "model": "nosuch:1"})
    assert r.status_code == missing.status_code == 400
    assert r.json() == {"error": "top_logprobs must be between 0 and 20"}


def test_ollama_client(server):
    client = ollama.Client(host=server.url)
    r = client.generate(model=SMOL, prompt=PROMPT, options=GREEDY, logprobs=True, top_logprobs=3)
    assert len(r.logprobs) == r.eval_count and "".join(lp.token for lp in r.logprobs) == r.response
    assert all(len(lp.top_logprobs) == 3 and lp.logprob == lp.top_logprobs[0].logprob for lp in r.logprobs)
    chunks = list(client.chat(model=SMOL, messages=[{"role": "user", "content": PROMPT}], options=GREEDY,
                              logprobs=True, stream=True))
    tokens = [lp for ch in chunks for lp in ch.logprobs or []]
    assert len(tokens) == chunks[-1].eval_count and all(lp.logprob <= 0 and not lp.top_logprobs for lp in tokens)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=SMOL, prompt=PROMPT, logprobs=True, top_logprobs=50)
    assert err.value.status_code == 400 and "top_logprobs" in err.value.error


def test_tool_calls_keep_their_tokens(server):
    """With tools the text is held back and parsed into calls at the end: the entries of all
    tokens still arrive, the call's included (as Ollama's tool parsers keep them)."""
    from test_tools import CALL_SCHEMA, TEMPLATE, WEATHER

    client = ollama.Client(host=server.url)
    client.create(model="corral-logprob-tools:1", from_=SMOL, template=TEMPLATE)
    try:
        r = client.chat(model="corral-logprob-tools:1", messages=[{"role": "user", "content": "Weather in Paris?"}],
                        tools=[WEATHER], format=CALL_SCHEMA, options={"temperature": 0, "num_predict": 60},
                        logprobs=True)
    finally:
        client.delete("corral-logprob-tools:1")
    assert r.message.tool_calls and len(r.logprobs) == r.eval_count
    assert "get_weather" in "".join(lp.token for lp in r.logprobs)


# -- live: OpenAI's API -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


def test_openai_chat(oai):
    kw = dict(model=SMOL, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=16,
              logprobs=True, top_logprobs=2)
    r = oai.chat.completions.create(**kw)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2 and t.logprob == t.top_logprobs[0].logprob <= 0
        assert bytes(t.bytes).decode() == t.token
    chunks = list(oai.chat.completions.create(**kw, stream=True))
    streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content]
    # Not asked: no logprobs (OpenAI's null).
    plain = oai.chat.completions.create(**{**kw, "logprobs": False})
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(**{**kw, "top_logprobs": 21})
    assert "top_logprobs must be between 0 and 20" in str(err.value)


def test_openai_legacy_completions(oai):
    kw = dict(model=SMOL, prompt="The sea is", temperature=0, max_tokens=8)
    r = oai.completions.create(**kw, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token_logprob, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and token_logprob == max(top.values()) <= 0
    chunks = list(oai.completions.create(**kw, logprobs=2, stream=True))
    streamed = [t for ch in chunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    offsets = [o for ch in chunks if ch.choices[0].logprobs for o in ch.choices[0].logprobs.text_offset]
    assert streamed == lp.tokens and offsets == lp.text_offset
    assert oai.completions.create(**kw).choices[0].logprobs is None
