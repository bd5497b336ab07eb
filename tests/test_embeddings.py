"""Embeddings as Ollama v0.33 serves them (server/routes.go EmbedHandler / EmbeddingsHandler,
middleware/openai.go), on the real models and through the official clients; plus the pure rules
(fit.embedding_input, vectors.py, models/embedding.py)."""

from __future__ import annotations

import base64
import struct

import httpx
import numpy as np
import ollama
import openai
import pytest
from conftest import GEMMA, MODELS, SMOL

from corral.api.vectors import normalize, shaped
from corral.errors import ClientError
from corral.models.embedding import Pooling, embedding_pooling, legacy_embeddings_raw
from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store
from corral.runner.fit import Specials, embedding_input
from corral.runner.protocol import embed_chunk_tokens

TOO_LONG = "the input length exceeds the context length"  # Ollama's words (llm/llama_server.go)


def words(n: int) -> str:
    return " ".join(["word"] * n)


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=600)


def embed(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/embed", json=body, timeout=600)


# -- live: /api/embed -------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_embed_batch_is_normalized_and_meaningful(client, model):
    texts = ["The cat sat on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply today."]
    r = client.embed(model=model, input=texts)
    e = np.array(r.embeddings)
    assert e.shape[0] == 3 and np.allclose(np.linalg.norm(e, axis=1), 1.0)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # the two cat sentences are closest
    alone = client.embed(model=model, input=texts[0])
    assert np.allclose(alone.embeddings[0], e[0], atol=1e-4)  # batched with others or alone: the same vector
    assert 0 < alone.prompt_eval_count < r.prompt_eval_count


@pytest.mark.parametrize("model", MODELS)
def test_truncate_keeps_the_head_and_counts_only_the_tokens_used(server, model):
    # Ollama keeps num_ctx less one token for each of BOS and EOS (reserved whether or not the
    # vocabulary adds them), then the runner adds the vocabulary's own: SmolLM2 adds none, Gemma-3 a BOS.
    kept = 62 + (model == GEMMA)
    long = embed(server, model=model, input=words(300), options={"num_ctx": 64}).json()
    assert long["prompt_eval_count"] == kept
    head = embed(server, model=model, input=words(62), options={"num_ctx": 64}).json()
    assert head["prompt_eval_count"] == kept  # the truncated input is exactly its first 62 words
    assert np.dot(long["embeddings"][0], head["embeddings"][0]) > 0.9999
    batch = embed(server, model=model, input=["short", words(100), "medium text"], options={"num_ctx": 30}).json()
    assert len(batch["embeddings"]) == 3 and batch["prompt_eval_count"] <= 90


def test_truncate_false_is_a_400_in_ollamas_words(server, client):
    r = embed(server, model=SMOL, input=words(300), truncate=False, options={"num_ctx": 64})
    assert r.status_code == 400 and r.json() == {"error": TOO_LONG}
    r = embed(server, model=SMOL, input=["short", words(300), "short"], truncate=False, options={"num_ctx": 64})
    assert r.status_code == 400 and r.json() == {"error": TOO_LONG}
    # A context with no room for any token (Ollama's check before truncating).
    r = embed(server, model=SMOL, input="hi", options={"num_ctx": 1})
    assert r.status_code == 400 and r.json()["error"] == "input after truncation exceeds maximum context length"
    fits = embed(server, model=SMOL, input=words(62), truncate=False, options={"num_ctx": 64})
    assert fits.status_code == 200 and fits.json()["prompt_eval_count"] == 62
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=SMOL, input=words(300), truncate=False, options={"num_ctx": 64})
    assert err.value.status_code == 400 and err.value.error == TOO_LONG


def test_dimensions_shorten_and_renormalize_as_ollama(server, client):
    full = np.array(client.embed(model=SMOL, input="hello there").embeddings[0])
    short = client.embed(model=SMOL, input="hello there", dimensions=32).embeddings[0]
    assert len(short) == 32 and abs(np.linalg.norm(short) - 1) < 1e-9
    assert np.allclose(short, full[:32] / np.linalg.norm(full[:32]), atol=1e-9)
    # Ollama applies dimensions only when 0 < dimensions < the size; otherwise the whole vector.
    for dims in (576, 100_000, 0, -3):
        r = embed(server, model=SMOL, input="hello there", dimensions=dims)
        assert r.status_code == 200 and np.allclose(r.json()["embeddings"][0], full, atol=1e-9), dims
    assert embed(server, model=SMOL, input="x", dimensions=1.5).status_code == 400


def test_empty_inputs_as_ollama(server):
    for empty in ("", []):  # nothing to embed: the model is loaded, no counts or durations
        r = embed(server, model=SMOL, input=empty)
        assert r.status_code == 200 and r.json() == {"model": SMOL, "embeddings": []}
    # An empty string among others is embedded: Gemma-3 gets its BOS alone; SmolLM2 adds no
    # token, and llama-server (Ollama's runner) refuses an input with none.
    r = embed(server, model=GEMMA, input=["", "x"]).json()
    assert len(r["embeddings"]) == 2 and len(r["embeddings"][0]) == 640
    assert embed(server, model=GEMMA, input="").json()["embeddings"] == []
    r = embed(server, model=SMOL, input=["x", ""])
    assert r.status_code == 400 and r.json() == {"error": "Input content cannot be empty"}


def test_an_input_beyond_2048_tokens_embeds_when_the_context_allows(server):
    r = embed(server, model=SMOL, input=words(2100), truncate=False, options={"num_ctx": 4096})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt_eval_count"] == 2100  # whole: no 2,048-token embedding context any more
    assert abs(np.linalg.norm(body["embeddings"][0]) - 1) < 1e-9


# -- live: /api/embeddings (legacy) -----------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_legacy_embeddings_agree_with_embed(server, client, model):
    legacy = client.embeddings(model=model, prompt="The sky is blue because of Rayleigh scattering.").embedding
    new = client.embed(model=model, input="The sky is blue because of Rayleigh scattering.").embeddings[0]
    # Ollama v0.33 normalizes the legacy vector too, except for the old raw BERT-family models.
    assert abs(np.linalg.norm(legacy) - 1) < 1e-9
    assert np.dot(legacy, new) > 0.9999


def test_legacy_empty_prompt_loads_and_long_prompt_is_refused(server):
    httpx.post(server.url + "/api/generate", json={"model": SMOL, "keep_alive": 0}, timeout=60)
    r = httpx.post(server.url + "/api/embeddings", json={"model": SMOL, "prompt": ""}, timeout=120)
    assert r.status_code == 200 and r.json() == {"embedding": []}
    assert SMOL in [m["name"] for m in httpx.get(server.url + "/api/ps", timeout=60).json()["models"]]
    # The legacy endpoint never truncates: Ollama hands the whole prompt to its runner.
    r = httpx.post(server.url + "/api/embeddings", json={"model": SMOL, "prompt": words(300),
                                                        "options": {"num_ctx": 64}}, timeout=120)
    assert r.status_code == 400 and r.json() == {"error": TOO_LONG}


# -- live: /v1/embeddings ---------------------------------------------------------------------
def test_openai_float_and_base64_agree_with_dimensions_and_usage(server, client):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    texts = ["a quiet harbour at dawn", "the stock market"]
    b64 = c.embeddings.create(model=SMOL, input=texts)  # the client asks for base64 by default
    flt = c.embeddings.create(model=SMOL, input=texts, encoding_format="float")
    assert [d.index for d in flt.data] == [0, 1] and len(flt.data[1].embedding) == 576
    assert np.allclose(flt.data[0].embedding, b64.data[0].embedding, atol=1e-6)
    ours = client.embed(model=SMOL, input=texts)
    assert flt.usage.prompt_tokens == flt.usage.total_tokens == ours.prompt_eval_count
    assert np.allclose(flt.data[1].embedding, ours.embeddings[1], atol=1e-9)
    short = c.embeddings.create(model=SMOL, input="a quiet harbour at dawn", dimensions=64, encoding_format="float")
    assert len(short.data[0].embedding) == 64 and abs(np.linalg.norm(short.data[0].embedding) - 1) < 1e-6
    raw = httpx.post(server.url + "/v1/embeddings", json={"model": SMOL, "input": "x", "encoding_format": "BASE64"},
                     timeout=120)
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 576  # any case, as Ollama's EqualFold


@pytest.mark.parametrize(("body", "error"), [
    ({"input": []}, "invalid input"),
    ({}, "invalid input"),
    ({"input": "x", "encoding_format": "hex"},
     "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64']."),
    ({"input": [[1, 2, 3]]}, None),  # token arrays: Ollama's /api/embed takes strings only
])
def test_openai_bad_inputs_are_400(server, body, error):
    r = httpx.post(server.url + "/v1/embeddings", json={"model": SMOL, **body}, timeout=60)
    assert r.status_code == 400
    if error:
        assert r.json()["error"]["message"] == error


def test_openai_empty_string_is_one_empty_input(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = c.embeddings.create(model=GEMMA, input="", encoding_format="float")
    assert len(r.data) == 1 and len(r.data[0].embedding) == 640 and r.usage.prompt_tokens == 1  # its BOS


# -- live: the GGUF's pooling -----------------------------------------------------------------
def gguf_with_pooling(source, target, arch: str, pooling: Pooling) -> None:
    """Copy a GGUF with `<arch>.pooling_type` added. The new key-values go first and take a
    multiple of 32 bytes (the default alignment), so every later offset moves by that much and the
    tensor data stays aligned, unchanged."""
    data = open(source, "rb").read()

    def kv(key: str, vtype: int, value: bytes) -> bytes:
        return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", vtype) + value

    added = kv(f"{arch}.pooling_type", 4, struct.pack("<I", pooling))  # 4: uint32
    added += kv("x" * (64 - len(added) - 13), 0, b"\0")  # 0: uint8, filling to 64 bytes
    assert len(added) == 64
    (n_kv,) = struct.unpack_from("<Q", data, 16)
    open(target, "wb").write(data[:16] + struct.pack("<Q", n_kv + 2) + added + data[24:])


def test_the_ggufs_pooling_type_is_applied(server, model_store, tmp_path):
    store = Store(model_store)
    mean = tmp_path / "mean.gguf"
    gguf_with_pooling(store.model_file(ModelName.parse(SMOL)), mean, "llama", Pooling.MEAN)
    layer = store.add_blob_file(mean)
    name = ModelName.parse("embedtest:mean-pooled")
    store.write_manifest(name, [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    try:
        text = "Pooling decides which tokens make the vector."
        last = embed(server, model=SMOL, input=[text, "Hello"]).json()["embeddings"]
        pooled = embed(server, model="embedtest:mean-pooled", input=[text, "Hello"]).json()["embeddings"]
        assert np.dot(last[1], pooled[1]) > 0.9999  # one token: its mean is itself (the last)
        assert np.dot(last[0], pooled[0]) < 0.99  # many: the mean of all is not the last one
    finally:
        store.delete(name)


# -- pure rules -------------------------------------------------------------------------------
def fake_tokenize(text: str, add_special: bool) -> list[int]:
    return ([1] if add_special else []) + [100 + len(w) for w in text.split()]


NO_SPECIALS = Specials(bos=1, eos=2, add_bos=False, add_eos=False)
BOS = Specials(bos=1, eos=2, add_bos=True, add_eos=False)


def test_embedding_input_budget_is_ollamas():
    assert embedding_input(fake_tokenize, "a b c", 64, True, NO_SPECIALS) == [101, 101, 101]
    assert embedding_input(fake_tokenize, "a b c", 64, True, BOS) == [1, 101, 101, 101]
    # 10 words, a context of 6: 6 less the reserved BOS and EOS = 4 kept, then the vocabulary's BOS.
    assert embedding_input(fake_tokenize, words(10), 6, True, BOS) == [1, 104, 104, 104, 104]
    assert embedding_input(fake_tokenize, words(4), 6, False, NO_SPECIALS) == [104] * 4
    with pytest.raises(ClientError, match=TOO_LONG):
        embedding_input(fake_tokenize, words(5), 6, False, NO_SPECIALS)
    with pytest.raises(ClientError, match="input after truncation exceeds maximum context length"):
        embedding_input(fake_tokenize, "a", 2, True, NO_SPECIALS)
    assert embedding_input(fake_tokenize, "", 6, True, BOS) == [1]
    with pytest.raises(ClientError, match="Input content cannot be empty"):
        embedding_input(fake_tokenize, "", 6, True, NO_SPECIALS)


def test_vectors_normalize_and_dimensions_as_ollama():
    assert normalize([3.0, 4.0]) == [0.6, 0.8]
    assert normalize([0.0, 0.0]) == [0.0, 0.0]  # the norm is floored, not divided by zero
    with pytest.raises(ClientError, match="NaN or Inf"):
        normalize([1.0, float("nan")])
    assert shaped([3.0, 4.0, 12.0], 2) == [0.6, 0.8]
    for dims in (None, 0, -1, 3, 99):
        assert shaped([3.0, 4.0, 12.0], dims) == normalize([3.0, 4.0, 12.0])


def test_pooling_and_legacy_rules_from_metadata():
    assert embedding_pooling(None) == Pooling.LAST  # no key: llama.cpp's NONE, Ollama's last token
    assert embedding_pooling(0) == Pooling.LAST
    assert embedding_pooling(1) == Pooling.MEAN and embedding_pooling(2) == Pooling.CLS
    assert not legacy_embeddings_raw({"general.architecture": "llama"})
    assert not legacy_embeddings_raw({"general.architecture": "bert", "bert.pooling_type": 1})
    assert legacy_embeddings_raw({"general.architecture": "bert", "bert.pooling_type": 1,
                                  "bert.normalize_embeddings": False})
    assert legacy_embeddings_raw({"general.architecture": "nomic-bert", "nomic-bert.pooling_type": 1})
    assert embed_chunk_tokens(49152, 576) == 512 and embed_chunk_tokens(262144, 640) == 127
