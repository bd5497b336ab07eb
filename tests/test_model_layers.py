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


def test_a_go_template_renders_as_the_ggufs_jinja_does(server):
    """Ollama's named ChatML Go template and SmolLM2's own Jinja ChatML give the same prompt, so
    the same tokens and the same greedy answer, on /api/chat and /api/generate."""
    from pathlib import Path

    chatml = (Path(__file__).parent / "data" / "ollama_templates" / "chatml.gotmpl").read_text()
    r = httpx.post(server.url + "/api/create", timeout=120, json={
        "model": "corral-gochatml:1", "from": SMOL, "template": chatml, "stream": False})
    assert r.status_code == 200, r.text
    try:
        shown = httpx.post(server.url + "/api/show", json={"model": "corral-gochatml:1"}).json()
        assert shown["template"] == chatml
        messages = [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Name a colour."}]
        replies = [httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": model, "messages": messages, "stream": False, "options": GREEDY}).json()
            for model in ("corral-gochatml:1", SMOL)]
        assert replies[0]["prompt_eval_count"] == replies[1]["prompt_eval_count"]
        assert replies[0]["message"]["content"] == replies[1]["message"]["content"]
        generated = httpx.post(server.url + "/api/generate", timeout=120, json={
            "model": "corral-gochatml:1", "system": "You are terse.", "prompt": "Name a colour.",
            "stream": False, "options": GREEDY}).json()
        assert generated["prompt_eval_count"] == replies[1]["prompt_eval_count"]
        assert generated["response"] == replies[1]["message"]["content"]
        # A request's own Go template on /api/generate (Ollama's `template` field).
        own = httpx.post(server.url + "/api/generate", timeout=120, json={
            "model": SMOL, "system": "You are terse.", "prompt": "Name a colour.", "template": chatml,
            "stream": False, "options": GREEDY}).json()
        assert own["response"] == replies[1]["message"]["content"]
        bad = httpx.post(server.url + "/api/create", timeout=60, json={
            "model": "corral-badgo:1", "from": SMOL, "template": "{{ .Prompt ", "stream": False})
        assert bad.status_code == 400 and "unclosed action" in bad.json()["error"]
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": "corral-gochatml:1"})
