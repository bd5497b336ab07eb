"""The multiplexed hop (cluster/mux.py) on a real local Ray cluster: one corral node with 4 slots
behind `corral serve --cluster`. Concurrent streams on a node share its pump: the Ray messages the
ingress reads are about one per runner step, not one per token per stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import NO_REGISTRY, SMOL
from test_cluster import (
    COUNTING,
    LOOPBACK,
    _node_name,
    _node_store,
    _running,
    _start_ingress,
    _stop_ingress,
    _stream,
)

from corral.cluster import mux

for _key, _value in LOOPBACK.items():
    os.environ.setdefault(_key, _value)
ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.live, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

STREAMS = 4

# An ingress that starts a long count on the node, pumps (or not) and then dies (SIGKILL): no
# Ray stream ends on the replica's side when its caller dies, so only the outbox's lease frees it.
DOOMED = """
import asyncio, json, sys
import ray
from ray import serve
from corral.cluster.messages import ProxyRequest

ray.init(address=sys.argv[1], namespace="corral-tests", log_to_driver=False)
handle = serve.get_deployment_handle("corral-node", app_name="corral")

async def main():
    body = {"model": sys.argv[3], "prompt": sys.argv[4], "raw": True, "options": {"num_predict": 4000}}
    request = ProxyRequest("POST", "/api/generate", b"", ((b"content-type", b"application/json"),),
                           json.dumps(body).encode())
    started = await handle.options(method_name="start").remote(request, ingress=sys.argv[5], stream="s1",
                                                                target=sys.argv[2])
    if sys.argv[5] == "pump":
        pump = handle.options(stream=True, method_name="pump").remote(ingress=sys.argv[5], instance=started.instance,
                                                                      target=sys.argv[2])
        async for message in pump:
            print("streaming", flush=True)
    else:
        print("streaming", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def one_node(model_store: Path, tmp_path_factory) -> Iterator[tuple[str, str, str]]:
    """The ingress's URL, the node's name and the cluster's address."""
    from ray.cluster_utils import Cluster

    small: dict[str, Any] = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20, "num_cpus": 1}
    c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    proc = None
    try:
        root = tmp_path_factory.mktemp("node")
        env = {"OLLAMA_MODELS": str(_node_store(model_store, root / "models", extra=False)),
               "OLLAMA_NUM_PARALLEL": str(STREAMS), "OLLAMA_CONTEXT_LENGTH": "4096", "OLLAMA_KEEP_ALIVE": "10m",
               "CORRAL_REGISTRY_MIRRORS": NO_REGISTRY, "CORRAL_CACHE_DIR": str(root / "kv"),
               "CORRAL_SHUTDOWN_TIMEOUT": "5"}
        node = _node_name(c.add_node(**small, resources={"corral_node": 1}, env_vars=env).node_id)
        proc, url, _ = _start_ingress(c.address, {node}, tmp_path_factory)
        yield url, node, c.address
    finally:
        _stop_ingress(proc)
        c.shutdown()


def _hop_messages(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        if family.name == "corral_cluster_hop_messages":
            return sum(s.value for s in family.samples)
    raise AssertionError("no corral_cluster_hop_messages_total in the ingress's /metrics")


def test_concurrent_streams_on_a_node_share_one_ray_message_per_step(one_node: tuple[str, str, str]) -> None:
    url, node, _ = one_node
    warm = asyncio.run(_stream(url, SMOL, COUNTING, 4, raw=True))  # the model loads before the count starts
    assert warm["done"], warm
    before = _hop_messages(url)

    async def together() -> list[dict]:
        return await asyncio.gather(*(_stream(url, SMOL, COUNTING, 48, raw=True) for _ in range(STREAMS)))

    results = asyncio.run(together())
    messages = _hop_messages(url) - before
    tokens = sum(r["eval_count"] for r in results)
    print(f"hop: {messages:.0f} Ray messages for {tokens} tokens of {STREAMS} streams")
    assert all(r["done"] and r["error"] is None and r["node"] == node for r in results), results
    assert tokens >= STREAMS * 40, tokens
    # One stream alone costs about a message per token (or per pump interval, whichever is longer);
    # four running together, about a quarter of that.
    assert messages < tokens / 2, (messages, tokens)
    assert _running(url, node) == 0


@pytest.mark.parametrize("pump", ["pump", "no pump"])
def test_the_streams_of_an_ingress_that_dies_are_cancelled_on_the_node(one_node: tuple[str, str, str], pump: str) -> None:
    """A dead ingress's outbox expires (mux.LEASE_S after its last touch, or mux.ATTACH_S when it
    never pumped): the node cancels its streams and the slot frees."""
    url, node, address = one_node
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED, address, node, SMOL, COUNTING, pump],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "streaming"
        started = time.monotonic() + 30
        while not _running(url, node) and time.monotonic() < started:  # a cold model loads first
            time.sleep(0.2)
        assert _running(url, node) == 1
    finally:
        doomed.kill()
        doomed.wait()
    deadline = time.monotonic() + mux.LEASE_S + 10
    while _running(url, node) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running(url, node) == 0


def test_a_live_ingresss_long_stream_outlives_the_lease(one_node: tuple[str, str, str]) -> None:
    """Nothing but one stream through the ingress for longer than mux.LEASE_S (no other request
    renews its outbox there): the ingress's word in the directory keeps the stream going."""
    url, node, _ = one_node
    seconds = mux.LEASE_S + 4

    async def read() -> dict:
        out: dict = {"tokens": 0, "error": None, "done": False, "lasted": 0.0}
        began = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            async with client.stream("POST", "/api/generate", json={
                    "model": SMOL, "prompt": COUNTING, "raw": True,
                    "options": {"num_predict": 4000, "temperature": 0}}) as r:  # greedy: no early end
                async for line in r.aiter_lines():
                    obj = json.loads(line)
                    out["error"] = out["error"] or obj.get("error")
                    out["done"] = out["done"] or obj.get("done", False)
                    out["tokens"] += bool(obj.get("response"))
                    out["lasted"] = time.monotonic() - began
                    if out["lasted"] > seconds:
                        break  # the client leaves: the slot frees
        return out

    out = asyncio.run(read())
    assert out["error"] is None and out["tokens"] > 0, out
    assert not out["done"] and out["lasted"] > seconds, f"the stream ended before the lease could expire: {out}"
    deadline = time.monotonic() + 10
    while _running(url, node) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(url, node) == 0
