"""/api/create and /api/blobs with the official client and plain HTTP."""

from __future__ import annotations

import hashlib

import httpx
import ollama
import pytest
from conftest import SMOL

from corral.models.store import ModelName, Store


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_create_from_model_with_system_and_parameters(client):
    client.create(model="corral-pirate:1", from_=SMOL, system="You are a pirate. Say Arr.",
                  parameters={"temperature": 0, "num_predict": 6})
    try:
        same = client.generate(model=SMOL, prompt="Hello", system="You are a pirate. Say Arr.",
                               options={"temperature": 0, "num_predict": 6})
        pirate = client.generate(model="corral-pirate:1", prompt="Hello")
        assert pirate.eval_count <= 6  # the model's PARAMETER applies without request options
        # Its SYSTEM is in the prompt: the same prompt and answer as the base model given that system.
        assert pirate.prompt_eval_count == same.prompt_eval_count and pirate.response == same.response
        shown = client.show("corral-pirate:1")
        assert shown.details.family == "llama"
    finally:
        client.delete("corral-pirate:1")


def test_create_from_uploaded_gguf_blob(client, server, model_store):
    path = Store(model_store).model_file(ModelName.parse(SMOL))
    digest = client.create_blob(path)
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
    client.create(model="corral-from-blob:1", files={"model.gguf": digest})
    try:
        assert client.generate(model="corral-from-blob:1", prompt="Hi", options={"num_predict": 2}).eval_count == 2
    finally:
        client.delete("corral-from-blob:1")


def test_blob_with_wrong_digest_is_not_kept(server, model_store):
    data = b"not what the digest says"
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    r = httpx.post(f"{server.url}/api/blobs/{wrong}", content=data)
    assert r.status_code == 400 and "mismatch" in r.json()["error"]
    assert httpx.head(f"{server.url}/api/blobs/{wrong}").status_code == 404
    assert httpx.head(f"{server.url}/api/blobs/sha256:../../etc").status_code in (400, 404)


def test_modelfile_form(server):
    modelfile = f'FROM {SMOL}\nPARAMETER num_predict 3\nPARAMETER temperature 0\nSYSTEM """Be brief."""\n'
    r = httpx.post(server.url + "/api/create", json={"name": "corral-mf:1", "modelfile": modelfile, "stream": False})
    assert r.status_code == 200, r.text
    try:
        g = httpx.post(server.url + "/api/generate", json={"model": "corral-mf:1", "prompt": "Hi", "stream": False},
                       timeout=60).json()
        assert g["eval_count"] <= 3
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": "corral-mf:1"})


@pytest.mark.parametrize("body", [
    {"model": "bad:1", "from": SMOL, "template": "{{ .Prompt "},  # a Go template that does not parse
    {"model": "bad:1", "modelfile": "PARAMETER temperature 0"},  # no FROM
    {"model": "bad:1", "from": SMOL, "parameters": {"temperature": "hot"}},
    {"model": "bad:1", "files": {"m.gguf": "sha256:" + hashlib.sha256(b"text").hexdigest()}},  # not uploaded
    {"model": "bad:1"},
])
def test_bad_create_is_400(server, body):
    r = httpx.post(server.url + "/api/create", json={**body, "stream": False}, timeout=60)
    assert r.status_code == 400, r.text
    assert "bad:1" not in {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}


def test_uploaded_blob_that_is_not_a_gguf_is_400(server):
    data = b"plain text, not a model"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
    r = httpx.post(server.url + "/api/create", json={"model": "bad:1", "files": {"m.gguf": digest}, "stream": False})
    assert r.status_code == 400 and "GGUF" in r.json()["error"], r.text


def test_server_side_paths_are_refused_without_allow_local_from(server):
    """Server-side FROM paths are off by default (tests/test_hardening_store.py covers the rest)."""
    r = httpx.post(server.url + "/api/create", json={"model": "bad:1", "from": "/etc/hostname", "stream": False})
    assert r.status_code == 403 and "CORRAL_ALLOW_LOCAL_FROM" in r.json()["error"]
