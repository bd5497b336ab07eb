"""/api/generate's `context`, as Ollama still supports it: every templated answer ends with the
token ids of its prompt and answer, and a request that sends them back continues from there."""

from __future__ import annotations

import json

import pytest
from conftest import GEMMA, SMOL

GREEDY = {"temperature": 0, "num_predict": 12}


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def generate(http, **body) -> dict:
    r = http.post("/api/generate", json={"stream": False, "options": GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model", [SMOL, GEMMA])
def test_the_final_object_carries_the_prompt_and_answer_tokens(http, model):
    out = generate(http, model=model, prompt="Name three colors.")
    context = out["context"]
    assert all(isinstance(t, int) for t in context)
    assert len(context) == out["prompt_eval_count"] + out["eval_count"]
    # Streaming: the same tokens, on the final line only.
    lines = http.post("/api/generate", json={"model": model, "prompt": "Name three colors.", "options": GREEDY})
    objects = [json.loads(line) for line in lines.text.splitlines()]
    assert "context" not in objects[0] and objects[-1]["context"] == context


def test_a_request_with_context_continues_the_earlier_answer(http):
    # A base model continuing text: sending back the context and more text must give what the
    # whole text gives at once (greedy), and count the earlier tokens as prompt.
    first = generate(http, model=GEMMA, prompt="The first five prime numbers are 2, 3,")
    more = " and after those come"
    continued = generate(http, model=GEMMA, prompt=more, context=first["context"])
    assert continued["prompt_eval_count"] > len(first["context"])
    whole = generate(http, model=GEMMA, raw=True,
                     prompt="The first five prime numbers are 2, 3," + first["response"] + more)
    assert continued["response"] == whole["response"]
    assert continued["context"][:len(first["context"])] == first["context"]


def test_raw_answers_have_no_context_and_refuse_one(http):
    assert "context" not in generate(http, model=GEMMA, prompt="1, 2, 3,", raw=True)
    r = http.post("/api/generate", json={"model": GEMMA, "prompt": "x", "raw": True, "context": [1, 2]})
    assert r.status_code == 400 and r.json()["error"] == "raw mode does not support template, system, or context"
    r = http.post("/api/generate", json={"model": GEMMA, "prompt": "x", "raw": True, "system": "s"})
    assert r.status_code == 400


@pytest.mark.parametrize("context", [[10**9], [-1], ["a"], [1.5]])
def test_a_bad_context_is_400_and_the_runner_lives(http, context):
    r = http.post("/api/generate", json={"model": SMOL, "prompt": "hi", "stream": False, "context": context})
    assert r.status_code == 400, r.text
    assert generate(http, model=SMOL, prompt="hi")["done"]


def test_empty_or_null_context_is_not_given(http):
    base = generate(http, model=SMOL, prompt="Say yes.")
    for empty in ([], None):
        out = generate(http, model=SMOL, prompt="Say yes.", context=empty)
        assert out["response"] == base["response"] and out["prompt_eval_count"] == base["prompt_eval_count"]
