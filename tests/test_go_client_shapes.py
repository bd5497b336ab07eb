"""Requests exactly as Ollama's Go client (github.com/ollama/ollama/api) marshals them: every
field without `omitempty` is present, as its zero value or null (api/types.go). Ollama reads those
as "not given"; so must corral."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import SMOL

SHORT = "corral-goshort:1"  # SmolLM2 with defaults that keep answers short and greedy


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        r = client.post("/api/create", json={"model": SHORT, "from": SMOL, "stream": False,
                                             "parameters": {"num_predict": 8, "temperature": 0}})
        assert r.status_code == 200, r.text
        yield client
        client.request("DELETE", "/api/delete", json={"model": SHORT})


def lines(r: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def test_generate_request_with_zero_values(http):
    # GenerateRequest{Model, Prompt, Options: map{...}} with Stream set (as `ollama run` does).
    body = {"model": SMOL, "prompt": "Say hi.", "suffix": "", "system": "", "template": "",
            "stream": False, "options": {"temperature": 0, "num_predict": 4}}
    r = http.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["done"] and r.json()["eval_count"] >= 1
    # No options at all: a nil map is `"options": null`; no Stream: streamed.
    r = http.post("/api/generate", json={**body, "model": SHORT, "options": None, "stream": None})
    assert r.status_code == 200, r.text
    assert lines(r)[-1]["done"] and lines(r)[-1]["eval_count"] <= 8


def test_chat_request_with_nulls(http):
    body = {"model": SHORT, "messages": [{"role": "user", "content": "Say hi."}], "options": None,
            "stream": False}
    r = http.post("/api/chat", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["message"]["role"] == "assistant"
    # A nil Messages slice is `"messages": null`: Ollama loads the model.
    r = http.post("/api/chat", json={"model": SMOL, "messages": None, "options": None})
    assert r.status_code == 200 and r.json()["done_reason"] == "load", r.text
    # Messages with a tool call carry ToolCallFunction's zero index.
    call = {"function": {"index": 0, "name": "get_time", "arguments": {}}}
    r = http.post("/api/chat", json={**body, "messages": [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "noon"}, {"role": "user", "content": "Thanks."}]})
    assert r.status_code == 200, r.text


def test_embed_show_pull_create_with_zero_values(http):
    r = http.post("/api/embed", json={"model": SMOL, "input": ["hello"], "options": None})
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 1, r.text
    r = http.post("/api/show", json={"model": SMOL, "system": "", "template": "", "verbose": False,
                                     "options": None, "name": ""})
    assert r.status_code == 200 and r.json()["details"]["family"] == "llama", r.text
    r = http.post("/api/pull", json={"model": SMOL, "username": "", "password": "", "name": "", "stream": False})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    r = http.post("/api/create", json={"model": "corral-goshape:1", "from": SMOL, "name": "", "stream": False})
    assert r.status_code == 200, r.text
    try:
        assert "corral-goshape:1" in {m["name"] for m in http.get("/api/tags").json()["models"]}
    finally:
        http.request("DELETE", "/api/delete", json={"model": "corral-goshape:1"})
