"""corral on Ray Serve (issue 17), on a real local Ray cluster: a head and two corral nodes, every
address on loopback, each node its own store, memory limit, threads, one slot and a queue of one;
the ingress is `corral serve --cluster` in its own process, driven with the official clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import psutil
import pytest
from conftest import GEMMA, NO_REGISTRY, SMOL, free_port

from corral.cluster import CONTROLLER_ENV, SERVE_ENV
from corral.models.store import ModelName, Store

# Read by Ray when it is imported: usage stats off, and every address on loopback (Ray would
# otherwise resolve 127.0.0.1 to the machine's outward address). Token authentication off, said
# outright: Ray 2.60 turns it on for any process that finds a ~/.ray/auth_token (which a local
# `ray.init()` writes), so a token left by another program split the tests' clusters in two.
LOOPBACK = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
for _key, _value in LOOPBACK.items():
    os.environ.setdefault(_key, _value)
ray = pytest.importorskip("ray")

# Ray Serve 2.60 declares its config with pydantic v1-style fields: its deprecation warnings are not ours.
pytestmark = [pytest.mark.live, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # a raw prompt the model continues for a long time
SOLO = "solo:latest"  # a copy of smollm2 that only the first node has
# Each model alone fits a node's budget, both do not (estimates: smollm2 ~600 MiB, gemma3 ~760 MiB).
MEMORY_LIMIT = "1000MiB"


@dataclass
class RayCorral:
    url: str
    nodes: list[str]  # node names, in the order the nodes were added (the first has SOLO)
    proc: subprocess.Popen
    log: Path
    ray_logs: Path  # the Ray session's logs (the node replicas' corral logs are in worker-*.err)

    def diagnosis(self) -> str:
        """What a stuck scenario leaves behind: each node's models, the ingress's log and the
        nodes' corral log lines (a CI failure shows them)."""
        try:
            ps = json.dumps(_ps(self.url))
        except (httpx.HTTPError, ValueError) as exc:
            ps = f"/api/ps failed: {exc!r}"
        nodes = []
        for path in sorted(self.ray_logs.glob("worker-*.err")):
            lines = [line for line in path.read_text(errors="replace").splitlines() if "corral" in line]
            if lines:
                nodes.append(f"--- {path.name}\n" + "\n".join(lines[-40:]))
        return "\n".join([f"ps: {ps}", "--- ingress", self.log.read_text(errors="replace")[-4000:], *nodes])

    def run(self, scenario: Any, timeout: float = 180) -> Any:
        """asyncio.run(scenario), failing with the diagnosis when it does not end in time."""
        try:
            return asyncio.run(asyncio.wait_for(scenario, timeout))
        except TimeoutError:
            raise AssertionError(f"stuck for {timeout} s:\n{self.diagnosis()}") from None


def _node_store(model_store: Path, root: Path, extra: bool) -> Path:
    """A node's own store: the test models hard-linked (read-only blobs), and SOLO on one node."""
    shutil.copytree(model_store / "manifests", root / "manifests")
    (root / "blobs").mkdir(parents=True)
    for blob in (model_store / "blobs").iterdir():
        if blob.name.startswith("sha256-") and blob.is_file():
            os.link(blob, root / "blobs" / blob.name)
    if extra:
        Store(root).copy(ModelName.parse(SMOL), ModelName.parse(SOLO))
    return root


def _node_name(node_id: str) -> str:
    import socket

    return f"{socket.gethostname()}-{node_id[-8:]}"


@pytest.fixture(scope="module")
def cluster(model_store: Path, tmp_path_factory) -> Iterator[RayCorral]:
    from ray.cluster_utils import Cluster

    small: dict[str, Any] = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20, "num_cpus": 1}
    c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    nodes = []
    proc = None
    try:
        for i in range(2):
            root = tmp_path_factory.mktemp(f"node{i}")
            env = {"OLLAMA_MODELS": str(_node_store(model_store, root / "models", extra=i == 0)),
                   "CORRAL_MEMORY_LIMIT": MEMORY_LIMIT, "OLLAMA_NUM_THREADS": "1", "OLLAMA_NUM_PARALLEL": "1",
                   "OLLAMA_MAX_QUEUE": "1", "OLLAMA_CONTEXT_LENGTH": "2048", "OLLAMA_KEEP_ALIVE": "10m",
                   "CORRAL_REGISTRY_MIRRORS": NO_REGISTRY, "CORRAL_CACHE_DIR": str(root / "kv"),
                   "CORRAL_SHUTDOWN_TIMEOUT": "5"}
            node = c.add_node(**small, resources={"corral_node": 1}, env_vars=env)
            nodes.append(_node_name(node.node_id))
        proc, url, log = _start_ingress(c.address, set(nodes), tmp_path_factory)
        assert c.head_node is not None
        yield RayCorral(url, nodes, proc, log, Path(c.head_node.get_logs_dir_path()))
    finally:
        _stop_ingress(proc)
        c.shutdown()


def _start_ingress(address: str, nodes: set[str], tmp_path_factory) -> tuple[subprocess.Popen, str, Path]:
    """`corral serve --cluster address` in its own process (this driver joins the cluster too),
    once every one of `nodes` answers through it: the process, its URL and its log."""
    ray.init(address=address, namespace="corral-tests", log_to_driver=False)
    port = free_port()
    log = tmp_path_factory.mktemp("ingress") / "ingress.log"
    proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve", "--cluster", address],
                            env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the cluster did not start: " + log.read_text()[-3000:]
            try:
                if _live_nodes(url) >= nodes:
                    return proc, url, log
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(1)
    except BaseException:
        _stop_ingress(proc)
        raise


def _stop_ingress(proc: subprocess.Popen | None) -> None:
    """Stop the `corral serve --cluster` subprocess (gently, then for good) and this driver's Ray."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    ray.shutdown()


def _live_nodes(url: str) -> set[str]:
    """The nodes whose stores answer /api/tags (SMOL is in every store)."""
    models = httpx.get(url + "/api/tags", timeout=10).json()["models"]
    return {n for m in models for n in m.get("nodes", ())}


def _ps(url: str) -> list[dict]:
    return httpx.get(url + "/api/ps", timeout=10).json()["models"]


def _where(url: str, model: str) -> set[str]:
    return {row["node"] for row in _ps(url) if row["name"] == model}


def _served_by(url: str, model: str, prompt: str = "Say hi.", **options) -> str:
    r = httpx.post(url + "/api/generate", timeout=120, json={
        "model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 4, **options}})
    assert r.status_code == 200, r.text
    return r.headers["x-corral-node"]


def test_warm_model_requests_go_to_the_node_that_has_it(cluster: RayCorral) -> None:
    client = ollama.Client(host=cluster.url)
    first = client.generate(model=SMOL, prompt="Say hi.", options={"num_predict": 4})
    assert first.done
    holders = _where(cluster.url, SMOL)
    assert len(holders) == 1, _ps(cluster.url)
    served = [_served_by(cluster.url, SMOL, f"Count to {i}.") for i in range(4)]
    assert set(served) == holders
    # The OpenAI client through the same ingress lands there too.
    oai = openai.OpenAI(base_url=cluster.url + "/v1", api_key="unused")
    answer = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert answer.choices[0].message.content is not None
    assert _where(cluster.url, SMOL) == holders


def test_a_node_runs_at_corral_serves_priority_and_serves_quieter_pace(cluster: RayCorral) -> None:
    """Ray starts its workers at niceness 15; the node replica goes back to `corral serve`'s 0,
    and its runners with it (lowering it needs root, as CI has)."""
    replica = psutil.Process(_replica(_served_by(cluster.url, SMOL))["Pid"])
    runners = [p for p in replica.children(recursive=True) if "corral.runner.main" in " ".join(p.cmdline())]
    assert runners
    if os.geteuid() == 0:
        assert {_niceness(p.pid) for p in (replica, *runners)} == {0}
    # Serve's loops at corral's quieter pace: the replica's metrics, the controller's control loop.
    assert SERVE_ENV.items() <= replica.environ().items()
    controller = next(p for p in psutil.process_iter(["cmdline"]) if "ServeController" in " ".join(p.info["cmdline"] or []))
    assert CONTROLLER_ENV.items() <= controller.environ().items()


def _niceness(pid: int) -> int:
    """A process's niceness, the highest of its threads' (on Linux each thread has its own)."""
    values = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        values.append(int(stat.rsplit(")", 1)[1].split()[16]))
    return max(values)


def test_a_model_only_one_node_has_is_routed_there(cluster: RayCorral) -> None:
    for _ in range(3):
        assert _served_by(cluster.url, SOLO) == cluster.nodes[0]
    assert _where(cluster.url, SOLO) == {cluster.nodes[0]}


def test_a_model_whose_only_node_is_full_is_503_not_the_other_nodes_404(cluster: RayCorral) -> None:
    """The first node (1 slot, a queue of 1) admits two SOLO streams; a third is refused there, and
    the other node, which lacks SOLO (as a node that joined later), must not turn that into a 404."""
    async def three() -> list[dict]:
        return await asyncio.gather(*(_stream(cluster.url, SOLO, "1, 2, 3, 4, 5, 6, 7, 8,", 256, raw=True)
                                      for _ in range(3)))

    results = cluster.run(three())
    assert sorted(r["status"] for r in results) == [200, 200, 503], [(r["status"], r["error"]) for r in results]
    refused = next(r for r in results if r["status"] == 503)
    assert refused["retry_after"] and refused["error"]
    assert all(r["done"] and r["node"] == cluster.nodes[0] for r in results if r["status"] == 200)


def test_an_absent_model_is_404_with_both_clients(cluster: RayCorral) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=cluster.url).generate(model="absent:1b", prompt="hi")
    assert caught.value.status_code == 404 and "not found" in caught.value.error
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=cluster.url + "/v1", api_key="unused").chat.completions.create(
            model="absent:1b", messages=[{"role": "user", "content": "hi"}])


def test_merged_views_carry_the_node(cluster: RayCorral) -> None:
    tags = {m["name"]: m for m in httpx.get(cluster.url + "/api/tags", timeout=10).json()["models"]}
    assert set(tags[SMOL]["nodes"]) == set(cluster.nodes) and tags[SOLO]["nodes"] == [cluster.nodes[0]]
    metrics = httpx.get(cluster.url + "/metrics", timeout=10).text
    for node in cluster.nodes:
        assert f'node="{node}"' in metrics
    ids = {m.id for m in openai.OpenAI(base_url=cluster.url + "/v1", api_key="unused").models.list()}
    assert {SMOL, GEMMA, SOLO} <= ids
    assert httpx.get(cluster.url + "/api/version", timeout=10).json()["version"]


async def _stream(url: str, model: str, prompt: str, num_predict: int, raw: bool = False) -> dict:
    """One streamed /api/generate: its status, node, text, the times of its chunks (a chunk holds
    the tokens of one stream interval), its token count and its error."""
    out: dict = {"status": None, "node": None, "text": "", "times": [], "error": None, "done": False,
                 "eval_count": 0}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async with client.stream("POST", "/api/generate", json={
                "model": model, "prompt": prompt, "raw": raw,
                "options": {"num_predict": num_predict, "temperature": 0}}) as r:
            out["status"], out["node"] = r.status_code, r.headers.get("x-corral-node")
            if r.status_code != 200:
                out["error"] = json.loads(await r.aread())["error"]
                out["retry_after"] = r.headers.get("retry-after")
                return out
            async for line in r.aiter_lines():
                obj = json.loads(line)
                if "error" in obj:
                    out["error"] = obj["error"]
                elif obj.get("done"):
                    out["done"], out["eval_count"] = True, obj.get("eval_count", 0)
                elif obj.get("response"):
                    out["text"] += obj["response"]
                    out["times"].append(time.monotonic())
    return out


def test_two_models_too_big_for_one_node_stream_on_different_nodes(cluster: RayCorral) -> None:
    # SMOL is warm on one node (the tests above); GEMMA goes where memory is free, not over it.
    # The tests above also left SOLO warm on the first node: unloaded here, so that one node holds
    # a model and the other none, whichever node SMOL went to.
    r = httpx.post(cluster.url + "/api/generate", json={"model": SOLO, "keep_alive": 0}, timeout=60)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while SOLO in {row["name"] for row in _ps(cluster.url)} and time.monotonic() < deadline:
        time.sleep(0.5)
    # SOLO's load evicted SMOL if they shared the first node: SMOL is warm on exactly one node again.
    _served_by(cluster.url, SMOL)
    time.sleep(2)  # the nodes' routing stats (refreshed each second) show SOLO gone and SMOL loaded
    gemma_node = _served_by(cluster.url, GEMMA, "Once")
    assert gemma_node not in _where(cluster.url, SMOL) and len(_where(cluster.url, SMOL)) == 1
    time.sleep(2)  # and GEMMA loaded, so that SMOL's request is not sent to GEMMA's node to evict it

    async def both() -> tuple[dict, dict]:
        return await asyncio.gather(_stream(cluster.url, SMOL, "Tell a long story about a fox.", 128),
                                    _stream(cluster.url, GEMMA, "Once upon a time", 128))

    smol, gemma = cluster.run(both())
    assert smol["done"] and gemma["done"], (smol, gemma)
    assert smol["node"] != gemma["node"]
    assert _where(cluster.url, SMOL) == {smol["node"]} and _where(cluster.url, GEMMA) == {gemma["node"]}
    # At the same time: each stream had tokens while the other was still producing.
    assert smol["times"][0] < gemma["times"][-1] and gemma["times"][0] < smol["times"][-1]


def test_every_node_full_is_503_and_exactly_the_admitted_answer(cluster: RayCorral) -> None:
    """1 slot and a queue of 1 on each of 2 nodes: of 10 simultaneous requests, 4 are admitted
    (2 a node) and answered in full; 6 get corral's 503 with Retry-After, after both nodes were tried."""
    async def ten() -> list[dict]:
        return await asyncio.gather(*(_stream(cluster.url, SMOL, f"Write a poem about the number {i}.", 64)
                                      for i in range(10)))

    results = cluster.run(ten())
    refused = [r for r in results if r["status"] == 503]
    answered = [r for r in results if r["status"] == 200]
    assert len(refused) == 6 and len(answered) == 4, [(r["status"], r["error"]) for r in results]
    assert all(r["done"] and r["text"] and r["error"] is None for r in answered)
    assert {r["node"] for r in answered} == set(cluster.nodes)
    assert all(r["retry_after"] and r["error"] for r in refused)


def _replica(node: str) -> dict:
    """The node replica actor on a node (from Ray's actor table: name, pid)."""
    from ray._private.state import actors

    for info in actors().values():
        if info["State"] == "ALIVE" and "corral-node" in (info["Name"] or "") and \
                node.endswith(info["Address"]["NodeID"][-8:]):
            return info
    raise AssertionError(f"no live replica on {node}")


def test_a_disconnect_frees_the_slot_across_both_hops(cluster: RayCorral) -> None:
    async def leave_early() -> str:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=120) as client:
            async with client.stream("POST", "/api/generate", json={
                    "model": SMOL, "prompt": "Tell a very long story.", "options": {"num_predict": 2000}}) as r:
                async for line in r.aiter_lines():
                    if json.loads(line).get("response"):
                        return r.headers["x-corral-node"]
        raise AssertionError("no token")

    node = cluster.run(leave_early())
    deadline = time.monotonic() + 10
    while _running(cluster.url, node) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(cluster.url, node) == 0


def _running(url: str, node: str) -> int:
    """Requests running on a node, from its merged metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        if family.name == "corral_requests_running":
            total += sum(s.value for s in family.samples if s.labels.get("node") == node)
    return int(total)


async def _lines(url: str, model: str, prompt: str, num_predict: int, seen: asyncio.Queue, raw: bool = False) -> dict:
    """A streamed generate that reports each parsed line (with its node) to `seen` as it arrives."""
    out: dict = {"error": None, "done": False, "text": "", "end": None}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async with client.stream("POST", "/api/generate", json={
                "model": model, "prompt": prompt, "raw": raw,
                "options": {"num_predict": num_predict, "temperature": 0}}) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                obj = json.loads(line)
                await seen.put((r.headers["x-corral-node"], obj))
                if "error" in obj:
                    out["error"] = obj["error"]
                elif obj.get("done"):
                    out["done"] = True
                else:
                    out["text"] += obj.get("response", "")
    out["end"] = time.monotonic()
    return out


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_a_killed_node_ends_its_stream_and_its_queued_request_completes_elsewhere(cluster: RayCorral) -> None:
    """Each node streams one request (1 slot each), B waits in one node's queue; that node's replica
    is killed: its stream ends with an error line within 10 s, B is sent to the other node (whose
    client then leaves) and completes there, the node's runners die with it, and Serve brings the
    replica back."""
    async def first_token(seen: asyncio.Queue) -> str:
        while True:
            node, obj = await asyncio.wait_for(seen.get(), 60)
            if obj.get("response"):
                return node

    async def scenario() -> tuple[dict, dict, float, list[int]]:
        queues: list[asyncio.Queue] = [asyncio.Queue(), asyncio.Queue(), asyncio.Queue()]
        # Raw counting, not a story: a story can end (EOS) before B is sent and free its slot.
        long_a = asyncio.create_task(_lines(cluster.url, SMOL, COUNTING, 2000, queues[0], raw=True))
        node_a = await first_token(queues[0])
        await asyncio.sleep(2.5)  # routing stats are refreshed once a second: let them show A's slot busy
        long_c = asyncio.create_task(_lines(cluster.url, SMOL, COUNTING, 2000, queues[1], raw=True))
        node_c = await first_token(queues[1])
        assert {node_a, node_c} == set(cluster.nodes), cluster.diagnosis()  # both slots busy, one on each node
        task_b = asyncio.create_task(_lines(cluster.url, SMOL, "Say hi.", 8, queues[2]))
        node_b, obj = await asyncio.wait_for(queues[2].get(), 30)
        assert "queue_position" in obj, obj  # B waits behind that node's stream
        info = _replica(node_b)
        runners = [p.pid for p in psutil.Process(info["Pid"]).children(recursive=True)]
        ray.kill(ray.get_actor(info["Name"], namespace="serve"), no_restart=True)
        killed_at = time.monotonic()
        killed, survivor = (long_a, long_c) if node_b == node_a else (long_c, long_a)
        a = await asyncio.wait_for(killed, 30)
        survivor.cancel()  # its client leaves: the other node's slot frees for B
        b = await asyncio.wait_for(task_b, 60)
        return a, b, a["end"] - killed_at, runners

    a, b, ended_after, runners = cluster.run(scenario())
    assert a["error"] and not a["done"], a
    assert ended_after < 10
    assert b["done"] and b["text"] and b["error"] is None, b
    assert runners, "the node had a runner process"
    gone = time.monotonic() + 10
    while _alive(runners) and time.monotonic() < gone:
        time.sleep(0.2)
    assert not _alive(runners)
    # The next request succeeds at once (on the other node), and Serve brings the replica back.
    assert _served_by(cluster.url, SMOL)
    back = time.monotonic() + 90
    while _live_nodes(cluster.url) != set(cluster.nodes) and time.monotonic() < back:
        time.sleep(1)
    assert _live_nodes(cluster.url) == set(cluster.nodes)


def test_store_changes_reach_every_node(cluster: RayCorral) -> None:
    """copy and delete through the ingress apply on every node; a failure is the reply."""
    client = ollama.Client(host=cluster.url)
    client.copy(SMOL, "copied:latest")
    tags = {m["name"]: m for m in httpx.get(cluster.url + "/api/tags", timeout=10).json()["models"]}
    assert set(tags["copied:latest"]["nodes"]) == set(cluster.nodes)
    client.delete("copied:latest")
    assert "copied:latest" not in {m["name"] for m in httpx.get(cluster.url + "/api/tags", timeout=10).json()["models"]}
    # create streams one node's progress; every node has the model afterwards.
    progress = list(client.create(model="terse", from_=SMOL, system="Answer in one word.", stream=True))
    assert progress[-1].status == "success"
    tags = {m["name"]: m for m in httpx.get(cluster.url + "/api/tags", timeout=10).json()["models"]}
    assert set(tags["terse:latest"]["nodes"]) == set(cluster.nodes)
    client.delete("terse")
    # A model no node has: each node says 404, and so does the ingress.
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("absent:latest")
    assert caught.value.status_code == 404
