"""A model's layers applied as Ollama applies them: system, messages, params, license; /api/show."""

from __future__ import annotations

import httpx

from conftest import SMOL

GREEDY = {"temperature": 0, "num_predict": 12}


def test_messages_system_license_and_params_layers(server):
    body = {"model": "corral-layers:1", "from": SMOL, "stream": False,
            "system": "You are a helpful assistant.", "license": "Apache-2.0 (test)",
            "parameters": {"stop": ["Quux"], "num_predict": 40},
            "messages": [{"role": "user", "content": "My name is Quux Tiberius."},
                         {"role": "assistant", "content": "Nice to meet you, Quux Tiberius!"}]}
    r = httpx.post(server.url + "/api/create", json=body, timeout=120)
    assert r.status_code == 200, r.text
    try:
        shown = httpx.post(server.url + "/api/show", json={"model": "corral-layers:1"}).json()
        assert shown["license"] == "Apache-2.0 (test)"
        assert shown["system"] == "You are a helpful assistant."
        assert shown["messages"][0] == {"role": "user", "content": "My name is Quux Tiberius."}
        assert shown["capabilities"][0] == "completion"
        assert 'LICENSE """Apache-2.0 (test)"""' in shown["modelfile"]
        assert "MESSAGE user" in shown["modelfile"]
        assert "stop" in shown["parameters"] and "num_predict" in shown["parameters"]

        question = [{"role": "user", "content": "What is my name?"}]
        created = httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": "corral-layers:1", "messages": question, "stream": False,
            "options": {"temperature": 0}}).json()
        # The same conversation spelled out on the base model gives the same prompt.
        spelled = httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": SMOL, "stream": False, "options": {"temperature": 0, "num_predict": 40, "stop": ["Quux"]},
            "messages": [{"role": "system", "content": "You are a helpful assistant."}, *body["messages"],
                         *question]}).json()
        assert created["prompt_eval_count"] == spelled["prompt_eval_count"]
        assert created["message"]["content"] == spelled["message"]["content"]
        # The params layer's stop applies: the answer stops before "Quux".
        assert "Quux" not in created["message"]["content"]

        # A request's own system message replaces the model's; the messages layer still comes
        # first (Ollama: append(m.Messages, req.Messages...)).
        own = httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": "corral-layers:1", "stream": False, "options": GREEDY,
            "messages": [{"role": "system", "content": "Be brief."}, *question]}).json()
        base = httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": SMOL, "stream": False, "options": {**GREEDY, "stop": ["Quux"]},
            "messages": [*body["messages"], {"role": "system", "content": "Be brief."}, *question]}).json()
        assert own["prompt_eval_count"] == base["prompt_eval_count"]
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": "corral-layers:1"})


def test_capabilities_follow_the_gguf_and_template(server):
    shown = httpx.post(server.url + "/api/show", json={"model": SMOL}).json()
    assert shown["capabilities"] == ["completion"]  # SmolLM2's ChatML template names no tools
