"""The per-token cost of the Ray hop: `corral bench` against an embedded `corral serve` and against
`corral serve --cluster` on a one-node local Ray cluster, same machine, same settings (issue 17).

    python benchmarks/cluster_hop.py [--sweep 1,8] [--max-tokens 64] [--num-prompts 16] [--rounds 1]
        [--json F] [--idle S]

The servers run one after the other (never at once), each with the test store's smollm2:135m, 8
slots, 2048 context per slot, all cores; the ingress, Ray's processes and the node share the machine,
as they would on a node that is also the head. Greedy streaming OpenAI chat, one warm-up each. Reports
TPOT p50 and output tokens/s per concurrency and the cluster's overhead (cluster / embedded - 1),
and the Ray messages the hop cost per output token (the multiplexed hop: about 1/C). With --idle S,
each server first sits S seconds with no request while every process's CPU time is read: what the
machine spends on Ray (raylet, GCS, Serve's controller and proxy, the replicas) beside llama.cpp.
Not part of CI.

Every server runs in a session of its own: with the kernel's autogroup scheduling (Linux's default
on desktops and these VMs) CPU time is shared per session, so an embedded server left in the
caller's session (with the load generator) got a far smaller share on a busy machine and looked
2-10x slower than the cluster. Ray starts its daemons and workers in the session of whoever starts
the cluster, so the cluster is started by a process of its own session too (as by an operator's
`ray start`): its processes, the node's runners among them, then share one autogroup apart from
the load generator (measured alike: the C = 8 overhead's median +12.3 % over 4 rounds, against
+10.4-14.0 % with the cluster in the generator's session). Ray also sets
OMP_NUM_THREADS=1 in its workers when it is unset (the node's runners inherit it); the embedded
server is given the same value, so only the hop differs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Read by Ray when it is imported: usage stats off, every address on loopback.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import httpx

from corral.bench.command import add_arguments, run_sweep

MODEL = "smollm2:135m"
STORE = Path(os.environ.get("CORRAL_TEST_MODELS", Path.home() / ".cache" / "corral" / "test-models"))
NODE_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "OLLAMA_MODELS": str(STORE),
            "OLLAMA_NUM_PARALLEL": "8", "OLLAMA_CONTEXT_LENGTH": "2048",
            "OLLAMA_KEEP_ALIVE": "10m", "CORRAL_REGISTRY_MIRRORS": "registry.ollama.ai=http://127.0.0.1:9"}
# The stream interval (runner/coalesce.py), when given, applies to both servers alike: it sets how
# many Ray messages a stream costs through the cluster.
# The node's pump interval (cluster/mux.py), when given, too; and OpenMP's wait policy at the
# decode threads' barriers (how long a thread spins for its partner before it sleeps).
for _name in ("CORRAL_STREAM_INTERVAL", "CORRAL_CLUSTER_INTERVAL", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
    if _name in os.environ:
        NODE_ENV[_name] = os.environ[_name]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/api/tags", timeout=2).json().get("models"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def hop_messages(url: str) -> float | None:
    """The ingress's corral_cluster_hop_messages_total (Ray messages read from the nodes' pumps);
    None for a server without one (embedded, or a cluster from before the multiplexed hop)."""
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("corral_cluster_hop_messages_total "):
            return float(line.split()[1])
    return None


def _label(p: Any) -> str:
    cmd = p.info["cmdline"] or [p.info["name"] or "?"]
    word = cmd[0].split()[0] if cmd[0].startswith("ray::") else Path(cmd[0]).name
    if word.startswith("python") and len(cmd) > 2:
        word = " ".join(cmd[1:3])[:40]  # python -m corral.cli
    return word[:40]


def cpu_times() -> dict[int, tuple[str, float]]:
    """Every process's kind and CPU seconds so far."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            t = p.cpu_times()
            out[p.pid] = (_label(p), t.user + t.system)
        except psutil.Error:
            continue
    return out


def cpu_used(before: dict[int, tuple[str, float]], seconds: float) -> dict[str, float]:
    """CPU (in cores) each kind of process used since `before`, over `seconds`."""
    me = os.getpid()
    used: dict[str, float] = {}
    for pid, (name, t) in cpu_times().items():
        if pid != me:
            used[name] = used.get(name, 0.0) + (t - before.get(pid, (name, 0.0))[1]) / seconds
    return {k: round(v, 4) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0.001}


def idle_cpu(seconds: float) -> dict[str, float]:
    """CPU (in cores) each kind of process on the machine used over `seconds` with no request."""
    before = cpu_times()
    time.sleep(seconds)
    return cpu_used(before, seconds)


def sweep(url: str, loads: str, max_tokens: int, prompts: int, idle: float = 0.0) -> list[dict]:
    """One level at a time, each with the Ray messages it cost per output token (a figure the
    machine's load does not change)."""
    results = []
    if idle:
        httpx.post(url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                                "options": {"num_predict": 2}}, timeout=300)  # loaded
        cpu = idle_cpu(idle)
        results.append({"idle_cpu_cores": cpu})
        print(f"{url} idle: {sum(cpu.values()):.3f} cores; {cpu}")
    for load in loads.split(","):
        p = argparse.ArgumentParser()
        add_arguments(p, url, MODEL)
        before = hop_messages(url)
        cpu_before, t0 = cpu_times(), time.monotonic()
        [result] = run_sweep(p.parse_args(["--sweep", load, "--max-tokens", str(max_tokens),
                                           "--num-prompts", str(prompts)]))
        # CPU per process kind over the level (the load generator, this process, excluded).
        result["cpu_cores"] = cpu_used(cpu_before, time.monotonic() - t0)
        after = hop_messages(url)
        result["hop_messages_per_token"] = None if before is None or after is None else \
            (after - before) / max(result["output_tokens"], 1)
        results.append(result)
    return results


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def embedded(loads: str, max_tokens: int, prompts: int, log: Path, idle: float) -> list[dict]:
    port = free_port()
    env = {**os.environ, **NODE_ENV, "OLLAMA_HOST": f"127.0.0.1:{port}", "CORRAL_CACHE_DIR": tempfile.mkdtemp()}
    proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve"], env=env, start_new_session=True,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return sweep(f"http://127.0.0.1:{port}", loads, max_tokens, prompts, idle)
    finally:
        stop(proc)


# Run in a process of its own session: the cluster's processes (Ray's daemons, its workers, the node
# and its runners) then share one autogroup apart from this process's load generator, as after an
# operator's `ray start` with clients elsewhere, and as the embedded server is apart from it.
CLUSTER_PROCESS = """
import json, sys
from ray.cluster_utils import Cluster
head, node, two_nodes = json.loads(sys.argv[1])
c = Cluster(initialize_head=True, head_node_args=head)
if two_nodes:
    c.add_node(**node)
print(c.address, flush=True)
sys.stdin.read()  # until the benchmark closes it
c.shutdown()
"""


def cluster(loads: str, max_tokens: int, prompts: int, log: Path, idle: float, two_nodes: bool,
            ray_nice: int = 0) -> list[dict]:
    """One machine's cluster as CLUSTER.md starts it: the head is the node (one raylet, as
    `ray start --head --resources='{"corral_node": 1}'`); two_nodes: a head without corral plus a
    node beside it (two raylets and their agents on this one machine, as the tests' clusters)."""
    small: dict[str, Any] = {"node_ip_address": "127.0.0.1", "object_store_memory": 100 * 2**20}
    node: dict[str, Any] = {"resources": {"corral_node": 1},
                            "env_vars": {**NODE_ENV, "CORRAL_CACHE_DIR": tempfile.mkdtemp()}}
    head: dict[str, Any] = {**small, "num_cpus": 1, "include_dashboard": False, **({} if two_nodes else node)}
    ray_proc = subprocess.Popen([sys.executable, "-c", CLUSTER_PROCESS,
                                 json.dumps([head, {**small, "num_cpus": 1, **node}, two_nodes])],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=(lambda: os.nice(ray_nice)) if ray_nice else None)
    proc = None
    try:
        assert ray_proc.stdout is not None
        address = ray_proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the Ray cluster did not start ({ray_proc.wait()})")
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve", "--cluster", address],
                                env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}, start_new_session=True,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{port}", proc)
        return sweep(f"http://127.0.0.1:{port}", loads, max_tokens, prompts, idle)
    finally:
        if proc is not None:
            stop(proc)
        assert ray_proc.stdin is not None
        ray_proc.stdin.close()
        try:
            ray_proc.wait(120)
        except subprocess.TimeoutExpired:
            ray_proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default="1,8")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--num-prompts", type=int, default=16, help="requests per concurrency level")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU reading before each sweep")
    p.add_argument("--two-nodes", action="store_true",
                   help="a head without corral and a node beside it (two raylets), not the head as the node")
    p.add_argument("--ray-nice", type=int, default=0,
                   help="start Ray's daemons at this niceness (as `nice -n N ray start`)")
    args = p.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="cluster-hop-"))
    rounds = []
    for i in range(args.rounds):
        def run_embedded(i: int = i) -> list[dict]:
            return embedded(args.sweep, args.max_tokens, args.num_prompts, logs / f"embedded-{i}.log", args.idle)

        def run_cluster(i: int = i) -> list[dict]:
            return cluster(args.sweep, args.max_tokens, args.num_prompts, logs / f"cluster-{i}.log", args.idle,
                           args.two_nodes, args.ray_nice)
        # Alternate which goes first: the machine's pace drifts over a run.
        if i % 2:
            c = run_cluster()
            rounds.append({"embedded": run_embedded(), "cluster": c})
        else:
            rounds.append({"embedded": run_embedded(), "cluster": run_cluster()})
    print(f"{'C':>3} {'embedded TPOT ms':>17} {'cluster TPOT ms':>16} {'overhead':>9} "
          f"{'embedded tok/s':>15} {'cluster tok/s':>14} {'Ray msgs/token':>15}")
    for r in rounds:
        loads = [(e, c) for e, c in zip(r["embedded"], r["cluster"]) if "idle_cpu_cores" not in e]
        for e, c in loads:
            te, tc = e["tpot_s"]["p50"] * 1e3, c["tpot_s"]["p50"] * 1e3
            per_token = c.get("hop_messages_per_token")
            print(f"{e['concurrency']:>3} {te:>17.2f} {tc:>16.2f} {(tc / te - 1) * 100:>8.1f}% "
                  f"{e['output_tokens_per_s']:>15.1f} {c['output_tokens_per_s']:>14.1f} "
                  f"{'-' if per_token is None else f'{per_token:.2f}':>15}")
    for r in rounds:
        for kind in ("embedded", "cluster"):
            for level in r[kind]:
                if cpu := level.get("cpu_cores"):
                    top = ", ".join(f"{k} {v:.3f}" for k, v in list(cpu.items())[:6])
                    print(f"C={level['concurrency']} {kind}: {sum(cpu.values()):.2f} cores ({top})")
    overheads: dict[int, list[float]] = {}
    for r in rounds:
        for e, c in zip(r["embedded"], r["cluster"]):
            if "idle_cpu_cores" not in e:
                overheads.setdefault(e["concurrency"], []).append(c["tpot_s"]["p50"] / e["tpot_s"]["p50"] - 1)
    for load, values in overheads.items():
        print(f"C={load}: median overhead {statistics.median(values) * 100:+.1f} % over {len(values)} rounds")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))
    print(f"logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
