"""Every /api/* reply of corral, checked against Ollama's published OpenAPI description
(tests/data/ollama_openapi.yaml, copied from Ollama's repository): each JSON reply and each NDJSON
line must validate against the schema the description gives for it, and carry every field of the
description's example reply (the fields clients read), on a live server with the real models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml
from conftest import GEMMA, SMOL

SPEC = yaml.safe_load((Path(__file__).parent / "data" / "ollama_openapi.yaml").read_text())
# Fields of the examples that only some models have (a license, PARAMETERs) or only some
# servers (remote models).
OPTIONAL = {"/api/show": {"parameters", "license", "template", "modelfile"}}
# A load or unload (an empty prompt) evaluates nothing: no eval counts, as Ollama's.
NOTHING_EVALUATED = {"prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"}


def _schema(path: str, method: str, status: str, content_type: str) -> dict[str, Any]:
    content = SPEC["paths"][path][method]["responses"][status]["content"][content_type]
    return content


def _validator(schema: dict[str, Any]) -> Any:
    # The schema's $refs point into the document's components: validate with them alongside.
    return jsonschema_rs.Draft202012Validator({**schema, "components": SPEC["components"]})


def check(path: str, response: httpx.Response, method: str = "post") -> list[dict[str, Any]]:
    """Validate a reply (JSON, or NDJSON line by line) against the description; the objects."""
    assert response.status_code == 200, response.text
    operation = SPEC["paths"][path][method]["responses"]["200"]
    contents = operation.get("content")
    if contents is None:  # a reply with no body described (copy, delete)
        return []
    ndjson = response.headers["content-type"].startswith("application/x-ndjson")
    if ndjson:
        objects = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        content = contents.get("application/x-ndjson") or contents["application/json"]
    else:
        objects = [response.json()]
        content = contents["application/json"]
    validator = _validator(content["schema"])
    for obj in objects:
        errors = [str(e) for e in validator.iter_errors(obj)]
        assert not errors, f"{path}: {obj} → {errors}"
    example = content.get("example") or contents.get("application/json", {}).get("example")
    if example and isinstance(example, dict):
        _has_example_fields(path, objects[-1], example)
    return objects


def _has_example_fields(path: str, obj: dict[str, Any], example: dict[str, Any]) -> None:
    """Every field of the description's example is in ours (dicts and first list items too)."""
    missing = set(example) - set(obj) - OPTIONAL.get(path, set())
    if obj.get("done_reason") in ("load", "unload"):
        missing -= NOTHING_EVALUATED
    assert not missing, f"{path}: fields of Ollama's example missing from corral's reply: {missing} in {obj}"
    for key, value in example.items():
        if key not in obj:
            continue
        if isinstance(value, dict) and isinstance(obj[key], dict) and key not in ("model_info", "format"):
            _has_example_fields(f"{path}.{key}", obj[key], value)
        elif isinstance(value, list) and value and isinstance(value[0], dict) and obj[key]:
            _has_example_fields(f"{path}.{key}[]", obj[key][0], value[0])


@pytest.fixture(scope="module")
def server(start_server, registry):
    host, _ = registry
    return start_server(OLLAMA_NUM_PARALLEL="2", CORRAL_REGISTRY_MIRRORS=f"registry.ollama.ai=http://{host}")


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def test_the_description_is_ollamas_and_has_every_route():
    assert {"/api/generate", "/api/chat", "/api/embed", "/api/tags", "/api/ps", "/api/show", "/api/create",
            "/api/copy", "/api/pull", "/api/push", "/api/delete", "/api/version"} <= set(SPEC["paths"])


@pytest.mark.parametrize("stream", [False, True])
def test_generate(http, stream):
    body = {"model": SMOL, "prompt": "Say hi.", "stream": stream, "options": {"num_predict": 8, "temperature": 0}}
    final = check("/api/generate", http.post("/api/generate", json=body))[-1]
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert final[key] > 0, key


def test_generate_load_and_unload(http):
    load = check("/api/generate", http.post("/api/generate", json={"model": GEMMA}))
    assert load[-1]["done_reason"] == "load" and load[-1]["load_duration"] > 0
    unload = check("/api/generate", http.post("/api/generate", json={"model": GEMMA, "keep_alive": 0}))
    assert unload[-1]["done_reason"] == "unload"


@pytest.mark.parametrize("stream", [False, True])
def test_chat(http, stream):
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Say hi."}], "stream": stream,
            "options": {"num_predict": 8, "temperature": 0}}
    final = check("/api/chat", http.post("/api/chat", json=body))[-1]
    assert final["message"]["role"] == "assistant" and final["done_reason"] in ("stop", "length")


def test_embed(http):
    out = check("/api/embed", http.post("/api/embed", json={"model": SMOL, "input": ["a", "b"]}))[0]
    assert len(out["embeddings"]) == 2


def test_tags_ps_show_version(http):
    http.post("/api/generate", json={"model": SMOL})  # something loaded for /api/ps
    tags = check("/api/tags", http.get("/api/tags"), "get")[0]
    assert {SMOL, GEMMA} <= {m["name"] for m in tags["models"]}
    ps = check("/api/ps", http.get("/api/ps"), "get")[0]
    assert ps["models"]
    show = check("/api/show", http.post("/api/show", json={"model": SMOL}))[0]
    assert "completion" in show["capabilities"]
    assert check("/api/version", http.get("/api/version"), "get")[0]["version"] == "0.33.0"


@pytest.mark.parametrize("stream", [False, True])
def test_create_copy_delete(http, stream):
    name = f"openapi-{'s' if stream else 'j'}:1"
    created = check("/api/create", http.post("/api/create", json={"model": name, "from": SMOL, "system": "Be terse.",
                                                                 "stream": stream}))
    assert created[-1]["status"] == "success"
    check("/api/copy", http.post("/api/copy", json={"source": name, "destination": name + "-copy"}))
    for gone in (name, name + "-copy"):
        check("/api/delete", http.request("DELETE", "/api/delete", json={"model": gone}), "delete")


@pytest.mark.parametrize("stream", [False, True])
def test_push_and_pull(http, registry, stream):
    host, _ = registry
    name = f"{host}/corral/openapi:{'s' if stream else 'j'}"
    check("/api/copy", http.post("/api/copy", json={"source": SMOL, "destination": name}))
    pushed = check("/api/push", http.post("/api/push", json={"model": name, "insecure": True, "stream": stream}))
    assert pushed[-1]["status"] == "success"
    check("/api/delete", http.request("DELETE", "/api/delete", json={"model": name}), "delete")
    pulled = check("/api/pull", http.post("/api/pull", json={"model": name, "insecure": True, "stream": stream}))
    assert pulled[-1]["status"] == "success"
    check("/api/delete", http.request("DELETE", "/api/delete", json={"model": name}), "delete")


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", {"model": "nosuch:1", "prompt": "x"}),
    ("/api/chat", {"model": SMOL, "messages": [{"role": "wizard", "content": "x"}]}),
    ("/api/embed", {"model": SMOL, "input": 3}),
    ("/api/show", {"model": "nosuch:1"}),
])
def test_errors_are_the_described_error_object(http, path, body):
    r = http.post(path, json=body)
    assert 400 <= r.status_code < 500
    errors = [str(e) for e in _validator({"$ref": "#/components/schemas/ErrorResponse"}).iter_errors(r.json())]
    assert not errors and isinstance(r.json()["error"], str) and r.json()["error"]
