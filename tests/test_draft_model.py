"""Speculative decoding with a draft model (Ollama's DRAFT layer) on the real engine: a model
created from smollm2:135m with a draft answers greedily token for token as smollm2 alone, alone
and with 4 requests at once; the draft really ran (/metrics); a draft with another vocabulary is
refused at create; draft_num_predict 0 turns drafting off; create's errors are Ollama's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import pytest
from conftest import GEMMA, SMOL
from helpers import stream_generate, warm

from corral.bench.random_gguf import write_random_llama
from corral.models.store import MEDIA_DRAFT, MEDIA_MODEL, Layer, ModelName, Store

SELF = "corral-draft-self:1"  # smollm2 drafting for itself: every draft token is accepted
RANDOM = "corral-draft-random:1"  # a random 2-layer llama with smollm2's vocabulary: few are
PROMPTS = ["Write a poem about the sea.", "What is the capital of France? Explain its history.",
           "Count from 1 to 30, one number a line.", "Explain gravity to a child."]
GREEDY = {"temperature": 0, "num_predict": 48}
# Each model here is a runner of its own (the model and its draft, 4 slots): on this shared 2-core
# machine a first request with its load took over 300 s once (load average 10).
pytestmark = pytest.mark.timeout(900)


def drafted(url: str, model: str) -> tuple[float, float]:
    """(drafted, accepted) tokens so far for a model, from /metrics."""
    values = {}
    for line in httpx.get(url + "/metrics", timeout=60).text.splitlines():
        for name in ("corral_draft_tokens", "corral_draft_accepted_tokens"):
            if line.startswith((f'{name}_total{{model="{model}"}}', f'{name}{{model="{model}"}}')):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values.get("corral_draft_tokens", 0.0), values.get("corral_draft_accepted_tokens", 0.0)


def create(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/api/create", json={"stream": False, **body}, timeout=120)


def upload(url: str, path: Path) -> str:
    digest = ollama.Client(host=url).create_blob(path)
    assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 200
    return digest


@pytest.fixture(scope="module")
def models(server, model_store, tmp_path_factory):
    """SELF by a Modelfile's DRAFT naming a store model; RANDOM by draft_files (an uploaded blob)."""
    r = create(server.url, model=SELF, modelfile=f"FROM {SMOL}\nDRAFT {SMOL}\n")
    assert r.status_code == 200, r.text
    random = tmp_path_factory.mktemp("draft") / "random.gguf"
    write_random_llama(Store(model_store, sweep=False).model_file(ModelName.parse(SMOL)), random, embd_scale=1.0)
    r = create(server.url, model=RANDOM, **{"from": SMOL}, draft_files={"random.gguf": upload(server.url, random)})
    assert r.status_code == 200, r.text
    warm(server.url, SMOL)
    yield server
    for name in (SELF, RANDOM):
        httpx.request("DELETE", server.url + "/api/delete", json={"model": name}, timeout=30)


def answer(url: str, model: str, prompt: str, **options) -> dict:
    r = httpx.post(url + "/api/generate", json={"model": model, "prompt": prompt, "stream": False,
                                                "options": {**GREEDY, **options}}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model", [SELF, RANDOM])
def test_greedy_answer_is_token_for_token_the_plain_models(models, model):
    url = models.url
    plain = answer(url, SMOL, PROMPTS[0])
    before = drafted(url, model)
    spec = answer(url, model, PROMPTS[0])
    proposed, agreed = (a - b for a, b in zip(drafted(url, model), before))
    assert spec["context"] == plain["context"] and spec["response"] == plain["response"]
    assert (spec["eval_count"], spec["done_reason"]) == (plain["eval_count"], plain["done_reason"])
    assert proposed > 0
    if model == SELF:  # the draft is the model: the only misses would be numeric ties
        assert agreed >= 0.95 * proposed, (agreed, proposed)
    else:
        assert agreed <= 0.3 * proposed, (agreed, proposed)


@pytest.mark.parametrize("model", [SELF, RANDOM])
def test_four_at_once_answer_as_the_plain_model(models, model):
    url = models.url
    plain = [answer(url, SMOL, p)["response"] for p in PROMPTS]
    before = drafted(url, model)
    records = asyncio.run(_all(url, model))
    assert [r["error"] for r in records] == [None] * 4
    assert [r["text"] for r in records] == plain
    assert drafted(url, model)[0] > before[0]


async def _all(url: str, model: str) -> list[dict]:
    return await asyncio.gather(*(stream_generate(url, model, p, GREEDY) for p in PROMPTS))


def test_draft_num_predict_zero_drafts_nothing(models):
    url = models.url
    plain = answer(url, SMOL, PROMPTS[2])
    before = drafted(url, SELF)
    off = answer(url, SELF, PROMPTS[2], draft_num_predict=0)
    assert drafted(url, SELF) == before and off["response"] == plain["response"]
    two = answer(url, SELF, PROMPTS[2], draft_num_predict=2)
    proposed = drafted(url, SELF)[0] - before[0]
    assert two["response"] == plain["response"] and 0 < proposed <= 2 * two["eval_count"]


def test_draft_num_predict_as_a_modelfile_parameter(models):
    url = models.url
    r = create(url, model="corral-draft-off:1", modelfile=f"FROM {SELF}\nPARAMETER draft_num_predict 0\n")
    assert r.status_code == 200, r.text
    try:
        before = drafted(url, "corral-draft-off:1")
        answer(url, "corral-draft-off:1", PROMPTS[1])
        assert drafted(url, "corral-draft-off:1") == before
        show = httpx.post(url + "/api/show", json={"model": "corral-draft-off:1"}, timeout=60).json()
        assert "DRAFT " in show["modelfile"]  # the draft came over from the FROM model
        assert "draft_num_predict" in show["parameters"]
    finally:
        httpx.request("DELETE", url + "/api/delete", json={"model": "corral-draft-off:1"}, timeout=30)


def test_show_prints_the_draft(models):
    show = httpx.post(models.url + "/api/show", json={"model": SELF}, timeout=60).json()
    line = next(x for x in show["modelfile"].splitlines() if x.startswith("DRAFT "))
    assert Path(line.removeprefix("DRAFT ")).is_file()
    plain = httpx.post(models.url + "/api/show", json={"model": SMOL}, timeout=60).json()["modelfile"]
    assert not any(x.startswith("DRAFT ") for x in plain.splitlines())


def test_draft_with_another_vocabulary_is_refused_at_create(models):
    r = create(models.url, model="corral-draft-gemma:1", modelfile=f"FROM {SMOL}\nDRAFT {GEMMA}\n")
    assert r.status_code == 400 and "vocabulary does not match" in r.json()["error"], r.text
    r = httpx.post(models.url + "/api/show", json={"model": "corral-draft-gemma:1"}, timeout=60)
    assert r.status_code == 404


def test_draft_with_another_vocabulary_is_refused_at_load(models, model_store):
    # A manifest written past create's check (another tool, an older corral): the runner refuses it.
    store = Store(model_store, sweep=False)
    smol, gemma = (store.manifest(ModelName.parse(n)).layer(MEDIA_MODEL) for n in (SMOL, GEMMA))
    assert smol and gemma
    name = ModelName.parse("corral-draft-bad:1")
    store.write_manifest(name, [smol, Layer(MEDIA_DRAFT, gemma.digest, gemma.size)])
    try:
        r = httpx.post(models.url + "/api/generate", json={"model": name.short, "prompt": "hi", "stream": False},
                       timeout=120)
        assert r.status_code >= 400 and "vocabulary does not match" in r.json()["error"], r.text
        assert answer(models.url, SMOL, "hi")["response"]  # the server goes on
    finally:
        httpx.request("DELETE", models.url + "/api/delete", json={"model": name.short}, timeout=30)


@pytest.mark.parametrize("body, error", [
    ({"from": SMOL, "draft_quantize": "q4_K_M"}, "--draft-quantize requires a DRAFT model"),
    ({"from": SMOL, "draft_files": {"d.gguf": "sha256:" + "0" * 64}}, "has not been uploaded"),
    ({"from": SMOL, "draft_files": {"d.gguf": "sha256:xyz"}}, "invalid digest"),
    ({"from": SMOL, "draft_files": {"a.txt": "sha256:" + "0" * 64}}, "exactly one .gguf"),
    ({"modelfile": f"FROM {SMOL}\nDRAFT no-such-model:1\n"}, "not found"),
])
def test_bad_draft_create_is_4xx(models, body, error):
    r = create(models.url, model="corral-draft-bad:1", **body)
    assert 400 <= r.status_code < 500 and error in r.json()["error"], r.text


def test_corral_create_uploads_a_local_draft(models, tmp_path, model_store):
    # `corral create -f`: a DRAFT naming a local file goes up as a blob, then as draft_files.
    write_random_llama(Store(model_store, sweep=False).model_file(ModelName.parse(SMOL)), tmp_path / "d.gguf",
                       seed=7)
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nDRAFT ./d.gguf\n")
    env = {**os.environ, "OLLAMA_HOST": models.url.removeprefix("http://")}
    r = subprocess.run([sys.executable, "-m", "corral.cli", "create", "corral-draft-cli:1", "-f",
                        str(tmp_path / "Modelfile")], capture_output=True, text=True, env=env, timeout=180)
    try:
        assert r.returncode == 0, r.stderr
        show = httpx.post(models.url + "/api/show", json={"model": "corral-draft-cli:1"}, timeout=60).json()
        line = next(x for x in show["modelfile"].splitlines() if x.startswith("DRAFT "))
        assert Path(line.removeprefix("DRAFT ")).read_bytes() == (tmp_path / "d.gguf").read_bytes()
        assert answer(models.url, "corral-draft-cli:1", PROMPTS[1])["response"] == answer(
            models.url, SMOL, PROMPTS[1])["response"]
    finally:
        httpx.request("DELETE", models.url + "/api/delete", json={"model": "corral-draft-cli:1"}, timeout=30)
    (tmp_path / "Modelfile").write_text(f"FROM {SMOL}\nDRAFT ./missing.gguf\n")
    r = subprocess.run([sys.executable, "-m", "corral.cli", "create", "corral-draft-cli:1", "-f",
                        str(tmp_path / "Modelfile")], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 1 and "DRAFT ./missing.gguf: no such file" in r.stderr
