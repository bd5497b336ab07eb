"""Ollama's official JavaScript client (the `ollama` npm package, pinned in tests/js), unchanged,
against a live corral: tests/js/client.mjs makes the calls, this module checks what they returned."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import GEMMA, SMOL

JS = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def client_dir() -> Path:
    """The client installed once per lock file (npm ci into a cache, as CI's other downloads)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed for the JavaScript client (apt-get install nodejs npm)")
    lock = (JS / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("CORRAL_JS_CACHE", Path.home() / ".cache" / "corral" / "js"))
    target = cache / hashlib.sha256(lock).hexdigest()[:16]
    if not (target / "node_modules" / "ollama" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, target / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True,
                       timeout=300)
    shutil.copy(JS / "client.mjs", target / "client.mjs")  # beside node_modules, where imports resolve
    return target


@pytest.fixture(scope="module")
def results(server, client_dir) -> dict:
    run = subprocess.run(["node", str(client_dir / "client.mjs"), server.url, SMOL, GEMMA],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_version_list_show_ps(results):
    assert results["version"]["version"] == "0.33.0"
    assert {SMOL, GEMMA} <= set(results["list"])
    assert "completion" in results["show"]["capabilities"] and results["show"]["details"]["family"] == "llama"
    assert any(m["name"] == SMOL and m["expires_at"] for m in results["ps"])


def test_generate_stream_and_not_agree(results):
    whole, streamed = results["generate"], results["generateStream"]
    assert whole["response"] and whole["response"] == streamed["text"]
    assert whole["done"] and whole["eval_count"] > 0 and whole["load_duration"] > 0
    assert streamed["last"]["done"] and streamed["last"]["context"] == whole["context"]


def test_chat_stream_and_not_agree(results):
    assert results["chat"]["message"]["role"] == "assistant"
    assert results["chat"]["message"]["content"] == results["chatStream"]["text"]
    assert results["chatStream"]["parts"] > 2
    assert json.loads(results["json"]["message"]["content"])["color"] in ("red", "blue")  # the schema held


def test_embed(results):
    vectors = results["embed"]["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 576 and vectors[0] != vectors[1]


def test_create_copy_delete(results):
    assert results["create"]["status"] == "success" and results["copy"]["status"] == "success"
    assert {"js-client:test", "js-client:copy"} <= set(results["afterCreate"])
    assert results["createdSystem"] == "Answer in one word."
    assert not {"js-client:test", "js-client:copy"} & set(results["afterDelete"])


def test_abort_and_errors(results):
    assert results["abort"]["seen"] == 3 and results["abort"]["error"] == "AbortError"
    assert results["notFound"] == {"name": "ResponseError", "error": "model 'no-such-model:1' not found",
                                   "status": 404}
