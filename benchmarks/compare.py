"""Run the same serving sweep against corral and its peers, one after the other, and report ratios.

    python benchmarks/compare.py --model-file PATH.gguf [--llama-server PATH [--exact]] [--llama-cpp-python]
        [--sweep 1,4,8,16] [--rate 2] [--rounds 3] [--out results/]

Peers follow ../shared/bench/PROTOCOL.md: same GGUF file, threads, slots (P = 8) and context per slot
(2048); greedy, max_tokens 128, OpenAI streaming chat; one warm-up request each; each peer in its best
configuration (llama-server's default: repacked weights, flash attention as it decides, no -kvu).
`--exact` adds corral's exact mode (CORRAL_EXACT=1) against the equally constrained
`llama-server --no-repack -fa off`, and exact mode's cost against corral's default. Servers
alternate for --rounds rounds; each ratio is taken within a round, the median reported. Not part of CI.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

from corral.bench.command import run_sweep
from corral.bench.report import plot, table
from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store

SLOTS, CTX = 8, 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def start_corral(model_file: Path, threads: int, store_dir: Path, src: Path | None = None,
                 exact: bool = False, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, str]:
    """corral from this checkout, or from another one's source tree (`src`: a before/after run),
    with `extra_env` on top (a --variant's settings)."""
    store = Store(store_dir)
    layer = store.add_blob_file(model_file)
    store.write_manifest(ModelName.parse("bench:model"), [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(store_dir),
           "OLLAMA_NUM_PARALLEL": str(SLOTS), "OLLAMA_CONTEXT_LENGTH": str(CTX), "OLLAMA_NUM_THREADS": str(threads),
           "OLLAMA_KEEP_ALIVE": "-1"}
    if src:
        env["PYTHONPATH"] = str(src)
    if exact:
        env["CORRAL_EXACT"] = "1"
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "corral.cli", "serve"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, "/")
    return proc, url, "bench:model"


def start_llama_server(binary: Path, model_file: Path, threads: int, exact: bool = False,
                       gpu: bool = False) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    # Its default configuration is its best here (PROTOCOL.md: -kvu made it slower); exact: the
    # same constraints as corral's exact mode (plain weights, no flash attention).
    cmd = [str(binary), "-m", str(model_file), "-t", str(threads), "-tb", str(threads), "-np", str(SLOTS),
           "-c", str(SLOTS * CTX), "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--no-repack", "-fa", "off"] if exact else []
    cmd += ["-ngl", "999"] if gpu else ["-ngl", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, "/health")
    return proc, url, "model"


def start_llama_cpp_python(model_file: Path, threads: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    # interrupt_requests off: a new request waits for the running one instead of cutting it off.
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file), "--n_threads", str(threads),
           "--n_threads_batch", str(threads), "--n_ctx", str(CTX), "--port", str(port), "--host", "127.0.0.1",
           "--interrupt_requests", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, "/v1/models")
    return proc, url, "model"


def sweep(url: str, model: str, args: argparse.Namespace, server_stats: bool) -> list[dict]:
    ns = argparse.Namespace(base_url=url, api="openai", model=model, concurrency=1, request_rate=0.0,
                            sweep=args.sweep, num_prompts=0, prompts_file=None, max_tokens=128, temperature=0.0,
                            seed=0, server_stats=server_stats, no_warmup=False)
    results = run_sweep(ns)
    if args.rate:
        ns.sweep, ns.request_rate, ns.num_prompts = "", args.rate, 32
        results += run_sweep(ns)
    return results


def _start_variant(args: argparse.Namespace, env: dict[str, str], store_dir: Path) -> tuple[subprocess.Popen, str, str]:
    return start_corral(args.model_file, args.threads, store_dir, extra_env=env)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-file", type=Path, required=True)
    p.add_argument("--llama-server", type=Path, default=None, help="path to llama.cpp's llama-server binary")
    p.add_argument("--exact", action="store_true",
                   help="also corral's exact mode against llama-server --no-repack -fa off")
    p.add_argument("--gpu", action="store_true", help="llama-server offloads every layer (-ngl 999)")
    p.add_argument("--llama-cpp-python", action="store_true", help="also run llama_cpp.server")
    p.add_argument("--baseline-src", type=Path, default=None,
                   help="also run corral from this source tree (e.g. a worktree of an older commit's src/)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=VAR=VALUE[,VAR=VALUE]",
                   help="also corral with these settings, e.g. si50=CORRAL_STREAM_INTERVAL=50ms "
                        "(against corral and llama-server)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--sweep", default="1,4,8,16")
    p.add_argument("--rate", type=float, default=0.0, help="also an open-loop run at this Poisson rate")
    p.add_argument("--rounds", type=int, default=3, help="alternate the servers this many times")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console(width=200)
    servers = [("corral", lambda d: start_corral(args.model_file, args.threads, d))]
    pairs = []  # (ours, peer): the ratios reported
    if args.baseline_src:
        servers.append(("corral-before", lambda d: start_corral(args.model_file, args.threads, d, args.baseline_src)))
        pairs.append(("corral", "corral-before"))
    if args.llama_server:
        servers.append(("llama-server", lambda d: start_llama_server(args.llama_server, args.model_file, args.threads,
                                                                      gpu=args.gpu)))
        pairs.append(("corral", "llama-server"))
    for spec in args.variant:
        name, _, assignments = spec.partition("=")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        servers.append((f"corral-{name}", functools.partial(_start_variant, args, env)))
        pairs.append((f"corral-{name}", "corral"))
        if args.llama_server:
            pairs.append((f"corral-{name}", "llama-server"))
    if args.exact:
        servers.append(("corral-exact", lambda d: start_corral(args.model_file, args.threads, d, exact=True)))
        pairs.append(("corral-exact", "corral"))
        if args.llama_server:
            servers.append(("llama-server-exact", lambda d: start_llama_server(
                args.llama_server, args.model_file, args.threads, exact=True, gpu=args.gpu)))
            pairs.append(("corral-exact", "llama-server-exact"))
    if args.llama_cpp_python:
        servers.append(("llama-cpp-python", lambda d: start_llama_cpp_python(args.model_file, args.threads)))
        pairs.append(("corral", "llama-cpp-python"))
    # Rounds alternate the servers, so that drift on a shared machine hits them alike; each ratio
    # is taken within a round, then the median is reported. Each round starts one server further
    # down the list, so no server always runs first (or right after another).
    rounds: list[dict[str, list[dict]]] = []
    for r in range(args.rounds):
        results: dict[str, list[dict]] = {}
        for name, start in servers[r % len(servers):] + servers[:r % len(servers)]:
            with tempfile.TemporaryDirectory() as tmp:
                proc, url, model = start(Path(tmp))
                try:
                    results[name] = sweep(url, model, args, server_stats=name.startswith("corral"))
                finally:
                    proc.terminate()
                    proc.wait(30)
            console.print(table(results[name], f"{name} (round {r + 1})"))
        rounds.append(results)
    ratios = []
    for us, peer in pairs:
        for i, ours in enumerate(rounds[0][us]):
            per_round = [(rd[us][i], rd[peer][i]) for rd in rounds]
            tok = sorted(a["output_tokens_per_s"] / max(b["output_tokens_per_s"], 1e-9) for a, b in per_round)
            ttft = sorted(a["ttft_s"]["p50"] / max(b["ttft_s"]["p50"], 1e-9) for a, b in per_round)
            ratios.append({"ours": us, "peer": peer, "concurrency": ours["concurrency"],
                           "request_rate": ours["request_rate"],
                           "tok_s_ratio": statistics.median(tok), "tok_s_ratios": tok,
                           "ttft_p50_ratio": statistics.median(ttft), "ttft_p50_ratios": ttft,
                           "peer_errors": sum(rd[peer][i]["errors"] for rd in rounds)})
    for r in ratios:
        load = f"rate {r['request_rate']}/s" if r["request_rate"] else f"C={r['concurrency']}"
        console.print(f"{r['ours']:>12} / {r['peer']:<18} {load:<10} output tok/s x{r['tok_s_ratio']:.2f} "
                      f"{[round(x, 2) for x in r['tok_s_ratios']]}   TTFT p50 x{r['ttft_p50_ratio']:.2f}"
                      + (f"   ({r['peer_errors']} peer errors)" if r["peer_errors"] else ""))
    results = rounds[-1]
    (args.out / "compare.json").write_text(json.dumps({"rounds": rounds, "ratios": ratios}, indent=2))
    plot(results, args.out / "compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
