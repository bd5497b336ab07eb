"""Model management with the official ollama client: tags, show, copy, delete, pull, ps."""

from __future__ import annotations

import httpx
import ollama
import pytest
from conftest import GEMMA, SMOL


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_list_reads_gguf_details(client):
    models = {m.model: m for m in client.list().models}
    assert {SMOL, GEMMA} <= set(models)
    smol = models[SMOL]
    assert smol.details.family == "llama" and smol.details.quantization_level == "Q4_1"
    assert smol.details.parameter_size == "135M" and smol.size > 90_000_000
    assert models[GEMMA].details.family == "gemma3" and models[GEMMA].details.quantization_level == "Q4_K_M"


def test_show(client):
    s = client.show(SMOL)
    assert s.details.format == "gguf" and "completion" in s.capabilities
    assert s.modelinfo["general.architecture"] == "llama"
    assert "<|im_start|>" in s.template and "FROM" in s.modelfile
    assert client.show(GEMMA).template == "{{ .Prompt }}"  # a base model without a chat template


def test_copy_then_delete(client):
    client.copy(SMOL, "corral-test-copy:v1")
    assert "corral-test-copy:v1" in {m.model for m in client.list().models}
    r = client.generate(model="corral-test-copy:v1", prompt="Hi", options={"num_predict": 2})
    assert r.eval_count == 2
    client.delete("corral-test-copy:v1")
    assert "corral-test-copy:v1" not in {m.model for m in client.list().models}
    assert client.show(SMOL).details.family == "llama"  # the shared blobs survive


def test_delete_and_copy_unknown_are_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("nosuch:1")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("nosuch:1", "other:1")
    assert err.value.status_code == 404


def test_pull_catalog_model_streams_progress(client):
    updates = list(client.pull(SMOL, stream=True))
    assert updates[-1].status == "success"
    assert any(u.total for u in updates)
    with pytest.raises(ollama.ResponseError):
        list(client.pull("not-in-catalog:1", stream=True))


def test_ps_with_official_client(client):
    client.generate(model=SMOL, prompt="", keep_alive="1m")
    running = {m.model: m for m in client.ps().models}
    assert running[SMOL].size > 0 and running[SMOL].context_length == 2048


def test_path_traversal_names_are_rejected(server):
    for name in ["../../../etc/passwd", "a/../../b:c", "x:../../y"]:
        r = httpx.post(server.url + "/api/show", json={"model": name})
        assert r.status_code == 400, name


def test_two_spellings_of_a_name_share_one_runner(server):
    """Names match ignoring case (Ollama's types/model/name.go): `SmolLM2:135M` is the stored
    `smollm2:135m`, served by the same runner, unloaded by either spelling."""
    import httpx

    for spelling in ("smollm2:135m", "SmolLM2:135M"):
        r = httpx.post(server.url + "/api/generate", timeout=120,
                       json={"model": spelling, "prompt": "", "keep_alive": "10m"})
        assert r.status_code == 200 and r.json()["done_reason"] == "load", r.text
    loaded = [m for m in httpx.get(server.url + "/api/ps").json()["models"] if m["name"].lower() == "smollm2:135m"]
    assert len(loaded) == 1 and loaded[0]["name"] == "smollm2:135m", loaded
