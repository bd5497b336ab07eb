"""The official openai client, unchanged, against corral's /v1 routes."""

from __future__ import annotations

import httpx
import openai
import pytest
from conftest import GEMMA, MODELS, SMOL


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


@pytest.mark.parametrize("model", MODELS)
def test_chat_completion(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi."}],
                                       temperature=0, max_tokens=10)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens <= 10 and r.usage.prompt_tokens > 0
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_stream_with_usage_matches_non_stream(client):
    kw = dict(model=SMOL, messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Name a color."}],
              temperature=0, max_completion_tokens=16, seed=1)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_stop_sequence(client):
    base = client.completions.create(model=GEMMA, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    stop = base[2:5]
    r = client.completions.create(model=GEMMA, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].text == base[:base.index(stop)] and r.choices[0].finish_reason == "stop"


def test_completions_as_ollama_no_16_token_cap_and_the_template_applied(client):
    # Ollama's /v1/completions has no implicit max_tokens (OpenAI's is 16) and renders the prompt
    # through the model's template, as /api/generate does.
    r = client.completions.create(model=SMOL, prompt="Count from 1 to 30, separated by commas.", temperature=0)
    assert r.usage.completion_tokens > 16 and r.choices[0].finish_reason == "stop", r
    assert "16" in r.choices[0].text and "<|im_end|>" not in r.choices[0].text
    gen = httpx.post(client.base_url.join("/api/generate").__str__(), timeout=120, json={
        "model": SMOL, "prompt": "Count from 1 to 30, separated by commas.", "stream": False,
        "options": {"temperature": 0, "top_p": 1.0}})
    assert gen.json()["prompt_eval_count"] == r.usage.prompt_tokens  # the same templated prompt
    assert gen.json()["response"] == r.choices[0].text


def test_models(client):
    ids = {m.id for m in client.models.list()}
    assert {SMOL, GEMMA} <= ids
    assert client.models.retrieve(SMOL).id == SMOL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nosuch:1")


def test_errors_are_openai_shaped(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nosuch", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["message"] and err.value.body["type"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "x"}], temperature=5)
