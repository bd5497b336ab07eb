"""Push to and pull from a real registry: Debian's docker-registry (the CNCF distribution server) on
loopback (the `registry` fixture of conftest.py). `.ci/run` installs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import SMOL

from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store


@pytest.fixture(scope="module")
def server(start_server, registry):
    """A default server whose registry.ollama.ai is the loopback registry: no test leaves the machine."""
    host, _ = registry
    return start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_REGISTRY_MIRRORS=f"registry.ollama.ai=http://{host}")


def cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://")}
    return subprocess.run([sys.executable, "-m", "corral.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_push_then_pull_back(server, registry, model_store):
    host, _ = registry
    name = f"{host}/corral/smol:v1"
    store = Store(model_store)
    assert cli(server, "cp", SMOL, name).returncode == 0
    pushed = cli(server, "push", name, "--insecure")
    assert pushed.returncode == 0, pushed.stderr
    pushed_digest = store.manifest(ModelName.parse(name)).digest
    manifest = httpx.get(f"http://{host}/v2/corral/smol/manifests/v1",
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    assert any(l["mediaType"] == "application/vnd.ollama.image.model" for l in manifest["layers"])
    assert cli(server, "rm", name).returncode == 0
    pulled = cli(server, "pull", name, "--insecure")
    assert pulled.returncode == 0, pulled.stderr
    r = httpx.post(server.url + "/api/generate", json={"model": name, "prompt": "Hi", "stream": False,
                                                        "options": {"num_predict": 3}}, timeout=120).json()
    assert r["eval_count"] == 3
    assert store.manifest(ModelName.parse(name)).digest == pushed_digest  # the same manifest, byte for byte
    cli(server, "rm", name)


def test_pull_resumes_and_verifies(server, registry, model_store, tmp_path):
    """A half-downloaded blob resumes; a blob the registry serves corrupted is never kept."""
    host, data = registry
    store = Store(model_store)
    # A small model of our own so that its blob is not already in the shared test store.
    blob = tmp_path / "tiny.gguf"
    # Bytes no other model has (a digest of their own), so that no other manifest keeps the blob.
    blob.write_bytes(store.model_file(ModelName.parse(SMOL)).read_bytes()[: 4 << 20] + os.urandom(64))
    layer = store.add_blob_file(blob)
    name = ModelName.parse(f"{host}/corral/tiny:v1")
    store.write_manifest(name, [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    assert cli(server, "push", name.short, "--insecure").returncode == 0
    blob_path = store.blob_path(layer.digest)
    content = blob_path.read_bytes()
    store.delete(name)
    assert not blob_path.exists()
    # Resume: half of the blob is already on disk.
    partial = store.partial_path(layer.digest)
    partial.write_bytes(content[: len(content) // 2])
    r = httpx.post(server.url + "/api/pull", json={"model": name.short, "insecure": True, "stream": False}, timeout=120)
    assert r.status_code == 200, r.text
    assert blob_path.read_bytes() == content and not partial.exists()
    store.delete(name)
    # Corruption: flip bytes in the registry's copy; the pull fails and keeps nothing.
    stored = next(Path(data).rglob(f"blobs/sha256/*/{layer.digest[7:]}/data"))
    stored.write_bytes(b"X" * 64 + content[64:])
    r = httpx.post(server.url + "/api/pull", json={"model": name.short, "insecure": True, "stream": False}, timeout=120)
    assert r.status_code == 500 and "verification" in r.json()["error"]
    assert not blob_path.exists() and not partial.exists()


def test_pull_into_a_full_disk_is_507_and_keeps_no_partial(server, registry, model_store, tmp_path, start_server):
    """A download that runs out of space removes its partial file (resuming into a full disk gets
    nowhere, and the partial is what fills it) and answers 507."""
    host, _ = registry
    store = Store(model_store)
    blob = tmp_path / "big.bin"
    blob.write_bytes(os.urandom(4 << 20))
    layer = store.add_blob_file(blob)
    name = ModelName.parse(f"{host}/corral/full:v1")
    store.write_manifest(name, [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    try:
        assert cli(server, "push", name.short, "--insecure").returncode == 0
    finally:
        store.delete(name)
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        small = start_server(OLLAMA_MODELS=str(mount / "models"))
        r = httpx.post(small.url + "/api/pull", json={"model": name.short, "insecure": True, "stream": False},
                       timeout=120)
        assert r.status_code == 507 and r.json()["error"].startswith("no space left on device"), r.text
        blobs = os.listdir(mount / "models" / "blobs")
        assert all(re.fullmatch(r"sha256-[0-9a-f]{64}", b) for b in blobs), blobs  # the config only, no partial
        assert layer.digest.replace(":", "-") not in blobs
        assert shutil.disk_usage(mount).free > 1 << 20
        small.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_pull_unknown_names(server, registry):
    """A model the registry does not have is a 404 at once, streamed or not (nothing streams first)."""
    host, _ = registry
    for stream in (False, True):
        r = httpx.post(server.url + "/api/pull", json={"model": f"{host}/corral/nosuch:v1", "insecure": True,
                                                        "stream": stream}, timeout=60)
        assert r.status_code == 404 and "not found" in r.json()["error"], r.text
    r = httpx.post(server.url + "/api/pull", json={"model": "llama3:8b", "stream": False}, timeout=60)
    assert r.status_code == 404 and f"mirror http://{host}" in r.json()["error"], r.text
