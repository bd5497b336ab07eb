"""corral's node deployment autoscaling on Ray's autoscaling test cluster (issue 17): fake nodes
that Ray's autoscaler starts and stops on this machine (`ray.cluster_utils.AutoscalingCluster`),
every address on loopback. Under load a second node appears and takes a new model; when the load
falls, Serve removes a node replica and its in-flight stream finishes (the replica drains).

AutoscalingCluster runs `ray stop --force` at start and end: it kills every Ray process on the
machine, so this module runs alone (not beside test_cluster.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import GEMMA, NO_REGISTRY, SMOL, free_port
from test_cluster import LOOPBACK, _live_nodes, _node_store, _served_by, _stop_ingress, _stream

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.live, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

GCS = "127.0.0.1:6379"  # `ray start --head`'s default port, on loopback (LOOPBACK's variable)
APP, DEPLOYMENT = "corral", "corral-node"
MiB = 2**20
# The fake nodes are started by the autoscaler's monitor process with *its* environment (the
# head's `ray start`): every fake node gets the same corral settings and, here, one shared store.
NODE_ENV = {"CORRAL_MEMORY_LIMIT": "1000MiB", "OLLAMA_NUM_THREADS": "1", "OLLAMA_NUM_PARALLEL": "1",
            "OLLAMA_MAX_QUEUE": "8", "OLLAMA_CONTEXT_LENGTH": "2048", "OLLAMA_KEEP_ALIVE": "10m",
            "CORRAL_REGISTRY_MIRRORS": NO_REGISTRY, "CORRAL_SHUTDOWN_TIMEOUT": "120"}
# 1 to 2 node replicas, 2 requests in flight per node, a node removed after 4 s of low load.
AUTOSCALE = "1-2:2:4s"


@dataclass
class Scaling:
    url: str
    proc: subprocess.Popen
    log: Path


def _cluster_config() -> Any:
    """AutoscalingCluster reads its base config from an example.yaml that Ray's wheel does not ship:
    the same fields, given here."""
    from ray.cluster_utils import AutoscalingCluster

    class Cluster(AutoscalingCluster):
        def _generate_config(self, head_resources: dict, worker_node_types: dict, autoscaler_v2: bool = False,
                             **config_kwargs: Any) -> dict:
            return {"cluster_name": "corral-autoscale", "max_workers": 2, "head_node_type": "ray.head.default",
                    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                                 "disable_node_updaters": True, "disable_launch_config_check": True},
                    "available_node_types": {**worker_node_types, "ray.head.default": {
                        "resources": dict(head_resources), "node_config": {}, "max_workers": 0}},
                    "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1, "docker": {},
                    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
                    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
                    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
                    "rsync_exclude": [], "rsync_filter": []}

    node_type = {"resources": {"CPU": 1, "corral_node": 1, "object_store_memory": 80 * MiB},
                 "node_config": {}, "min_workers": 0, "max_workers": 2}
    return Cluster(head_resources={"CPU": 1, "object_store_memory": 80 * MiB},
                   worker_node_types={"corral-node": node_type})


@pytest.fixture(scope="module")
def scaling(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scaling]:
    for key, value in LOOPBACK.items():
        os.environ.setdefault(key, value)
    # `ray` (the CLI AutoscalingCluster calls) lives beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    root = tmp_path_factory.mktemp("scale")
    env = {**NODE_ENV, "OLLAMA_MODELS": str(_node_store(model_store, root / "models", extra=False)),
           "CORRAL_CACHE_DIR": str(root / "kv")}
    cluster = _cluster_config()
    cluster.start(override_env=env)
    proc = None
    try:
        ray.init(address=GCS, namespace="corral-tests", log_to_driver=False)
        port = free_port()
        log = root / "ingress.log"
        proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve", "--cluster", GCS],
                                env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}",
                                     "CORRAL_CLUSTER_AUTOSCALE": AUTOSCALE},
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: proc is not None and proc.poll() is None and len(_nodes(url)) == 1, 150,
              lambda: "the cluster did not start: " + log.read_text()[-3000:])
        yield Scaling(url, proc, log)
    finally:
        _stop_ingress(proc)
        cluster.shutdown()


def _wait(ready: Any, timeout: float, why: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (httpx.TransportError, KeyError, ValueError):
            pass
        assert time.monotonic() < deadline, why()
        time.sleep(0.5)


def _nodes(url: str) -> set[str]:
    return _live_nodes(url)


def _replica_states() -> dict[str, int]:
    from ray import serve

    deployment = serve.status().applications[APP].deployments[DEPLOYMENT]
    return {str(getattr(state, "value", state)): n for state, n in deployment.replica_states.items()}


def _corral_machines() -> int:
    """Ray nodes alive that offer the corral_node resource (the fake workers)."""
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("corral_node"))


async def _counting(url: str, model: str) -> dict:
    """A long stream (raw: no chat template, so an instruct model keeps counting), with its end time."""
    out = await _stream(url, model, "1, 2, 3, 4, 5, 6, 7, 8,", 1800, raw=True)
    out["end"] = time.monotonic()
    return out


def test_a_second_node_appears_under_load_and_on_scale_in_streams_finish(scaling: Scaling) -> None:
    url = scaling.url
    first = _nodes(url)
    assert _corral_machines() == 1

    async def scenario() -> tuple[set[str], str, list[dict], list[dict], float, dict[str, int]]:
        stop = asyncio.Event()
        served: list[dict] = []

        async def load(i: int) -> None:  # back-to-back requests: 5 in flight, 2 per node wanted
            while not stop.is_set():
                served.append(await _stream(url, SMOL, f"Write a poem about the number {i}.", 48))

        workers = [asyncio.create_task(load(i)) for i in range(5)]
        deadline = time.monotonic() + 120
        while len(nodes := await asyncio.to_thread(_nodes, url)) < 2:
            assert time.monotonic() < deadline, f"no second node: {_replica_states()}"
            await asyncio.sleep(1)
        # The new node takes a new model: gemma3 does not fit beside smollm2 on the first node.
        gemma_node = await asyncio.to_thread(_served_by, url, GEMMA, "Once upon a time")
        # Scale-in: one long stream on each node, then the load stops; 2 in flight wants 1 node.
        long = [asyncio.create_task(_counting(url, SMOL)), asyncio.create_task(_counting(url, GEMMA))]
        stop.set()
        await asyncio.gather(*workers)
        deadline = time.monotonic() + 60
        while "STOPPING" not in (states := await asyncio.to_thread(_replica_states)):
            assert time.monotonic() < deadline, f"no scale-in: {states}"
            assert not all(t.done() for t in long), "the long streams ended before the scale-in"
            await asyncio.sleep(0.25)
        stopping_at = time.monotonic()
        return nodes, gemma_node, served, list(await asyncio.gather(*long)), stopping_at, states

    nodes, gemma_node, served, long, stopping_at, states = asyncio.run(scenario())
    assert first < nodes and len(nodes) == 2
    (new,) = nodes - first
    assert gemma_node == new
    assert all(r["done"] and r["error"] is None for r in served if r["status"] == 200), served
    assert {r["node"] for r in served if r["status"] == 200} <= nodes
    # Every stream in flight when the replica began to stop ended whole: done, no error line.
    assert {r["node"] for r in long} == nodes, long
    for r in long:
        assert r["status"] == 200 and r["done"] and r["error"] is None and r["text"], r
    # One node replica is left; the stream of the one removed was still running when it began to stop.
    _wait(lambda: len(_nodes(url)) == 1, 150, lambda: f"still {_nodes(url)}")
    (removed,) = nodes - _nodes(url)
    assert [r["end"] > stopping_at for r in long if r["node"] == removed] == [True], (states, removed, [(r["node"], r["end"] - stopping_at) for r in long])
    # Ray's autoscaler gives the idle machine back.
    _wait(lambda: _corral_machines() == 1, 90, lambda: f"{_corral_machines()} corral machines")
    assert _served_by(url, SMOL)
