"""The official `ollama` Python client, unchanged, against a live corral on both real models."""

from __future__ import annotations

import ollama
import pytest
from conftest import GEMMA, MODELS, SMOL

GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


@pytest.mark.parametrize("model", MODELS)
def test_generate_not_streaming(client, model):
    r = client.generate(model=model, prompt="The capital of France is", options=GREEDY)
    assert r.done and r.done_reason == "length"
    assert r.response.strip()
    assert r.eval_count == 12
    assert r.prompt_eval_count > 0
    assert r.total_duration >= r.eval_duration > 0


@pytest.mark.parametrize("model", MODELS)
def test_generate_streaming_matches_non_streaming(client, model):
    whole = client.generate(model=model, prompt="Once upon a time", options=GREEDY).response
    chunks = list(client.generate(model=model, prompt="Once upon a time", options=GREEDY, stream=True))
    assert chunks[-1].done and all(not c.done for c in chunks[:-1])
    assert "".join(c.response or "" for c in chunks) == whole
    assert len([c for c in chunks if c.response]) > 1


@pytest.mark.parametrize("model", MODELS)
def test_chat_streaming_and_not(client, model):
    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat(model=model, messages=messages, options=GREEDY)
    assert r.message.role == "assistant" and r.message.content.strip()
    chunks = list(client.chat(model=model, messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == r.message.content
    assert chunks[-1].done_reason in ("stop", "length")


def test_chat_multi_turn_uses_history(client):
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My name is Zanzibar."},
        {"role": "assistant", "content": "Nice to meet you, Zanzibar."},
        {"role": "user", "content": "What is my name?"},
    ]
    r = client.chat(model=SMOL, messages=history, options={"temperature": 0, "num_predict": 24})
    assert "Zanzibar" in r.message.content
    short = client.chat(model=SMOL, messages=history[-1:], options={"temperature": 0, "num_predict": 24})
    assert r.prompt_eval_count > short.prompt_eval_count + 10


def test_num_predict_counts_tokens(client):
    for n in (1, 5):
        r = client.generate(model=SMOL, prompt="Count: one, two, three,", options={"temperature": 0, "num_predict": n})
        assert r.eval_count == n and r.done_reason == "length"


@pytest.mark.parametrize("model", MODELS)
def test_stop_string_ends_generation_and_is_not_emitted(client, model):
    base = client.generate(model=model, prompt="1, 2, 3, 4,", options={"temperature": 0, "num_predict": 24}).response
    # Stop on a string that appears in the greedy continuation, possibly spanning tokens.
    assert len(base) > 6
    stop = base[3:6]
    r = client.generate(model=model, prompt="1, 2, 3, 4,", options={"temperature": 0, "num_predict": 24, "stop": [stop]})
    assert r.done_reason == "stop"
    assert stop not in r.response
    assert base.startswith(r.response)
    assert r.response == base[:base.index(stop)]


def test_sampling_with_seed_is_reproducible(client):
    opts = {"temperature": 0.9, "top_k": 50, "top_p": 0.95, "min_p": 0.05, "seed": 42, "num_predict": 16,
            "repeat_penalty": 1.2, "repeat_last_n": 32, "presence_penalty": 0.1, "frequency_penalty": 0.1}
    a = client.generate(model=SMOL, prompt="Tell me a story.", options=opts).response
    b = client.generate(model=SMOL, prompt="Tell me a story.", options=opts).response
    assert a == b and a.strip()


def test_gemma_chat_without_template_falls_back(client):
    r = client.chat(model=GEMMA, messages=[{"role": "user", "content": "What is the capital of France?"}],
                    options={"temperature": 0, "num_predict": 40})
    assert r.message.content.strip()
    assert "User:" not in r.message.content  # the fallback stops at the next turn


def test_unknown_model_is_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nosuchmodel:1b", prompt="hi")
    assert err.value.status_code == 404
    assert "not found" in err.value.error
