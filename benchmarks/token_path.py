"""What one stream's tokens cost on the serving path: CPU per token of the server and of its runner.

    python benchmarks/token_path.py [--model-file PATH.gguf] [--requests 12] [--tokens 128] [--rounds 3]
        [--variant NAME[:SRC][=ENV=VALUE,...]]... [--llama-server PATH] [--out results/token_path.json]

Each variant is a corral server (from this checkout, or from the source tree SRC, with extra
environment variables) on SmolLM2 (the test models' store, tests/conftest.py), 2 threads, the
protocol's 8 slots x 2048 context. Per variant and round: one warm-up request, then N sequential
OpenAI streaming chat requests (C = 1, greedy, max_tokens 128, the built-in prompts), timed by
corral's bench client. Around the N requests the script reads psutil's cpu_times and context
switches of the server process and of the runner (its child), so it reports

- tok/s, TTFT p50 and TPOT p50 (these move with whatever else runs on the machine),
- CPU ms per token of the server and of the runner, and of this client (much steadier on a shared
  machine, so variants are compared by these), and the runner's threads' time runnable but
  waiting for a CPU per token (what preemptions cost it),
- voluntary context switches per token (the server's: its wake-ups; one per token is the floor),
  the server's figures net of what it spends idle in as long (its timers, measured for 3 s first),
- the load average (`os.getloadavg`) while it ran.

`SCHED=batch|idle|nice:N` in a variant's list sets the server's threads' scheduling policy or nice
value from outside once its runner exists (the experiment of docs/PERFORMANCE.md "The token path").
Variants alternate within each round, so drift on a shared machine hits them alike. `--llama-server`
adds llama.cpp's server (one process; its CPU is reported as the server's). Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from compare import start_corral, start_llama_server  # a sibling script, not a package

from corral.bench.load import LoadSpec, run_load, warm_up
from corral.bench.prompts import builtin_prompts
from corral.bench.report import summarize
from corral.models.store import ModelName, Store

TEST_MODELS = Path.home() / ".cache" / "corral" / "test-models"
IDLE_S = 3.0  # how long the idle server's own CPU rate is measured


@dataclass
class Variant:
    name: str
    src: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    llama_server: Path | None = None
    sched: str = ""  # applied to the server's threads once its runner exists: batch, idle or nice:N

    @classmethod
    def parse(cls, text: str) -> Variant:
        """NAME[:SRC][=K=V,K=V]; the key SCHED is not an environment variable but `sched`."""
        head, _, env_text = text.partition("=")
        name, _, src = head.partition(":")
        env = dict(kv.split("=", 1) for kv in env_text.split(",") if kv)
        return cls(name, Path(src) if src else None, env, sched=env.pop("SCHED", ""))


def set_sched(proc: psutil.Process, how: str) -> None:
    """An experiment from outside the server: its threads' policy or nice value (per thread on
    Linux), set after the runner was spawned so that the runner keeps the normal policy."""
    for thread in proc.threads():
        if how.startswith("nice:"):
            os.setpriority(os.PRIO_PROCESS, thread.id, int(how[5:]))
        else:
            policy = {"batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}[how]
            os.sched_setscheduler(thread.id, policy, os.sched_param(0))


def cpu(proc: psutil.Process) -> tuple[float, int, int, float]:
    """Seconds on a CPU, voluntary and involuntary context switches, seconds runnable but waiting
    for a CPU. The times are the scheduler's own (/proc/PID/task/*/schedstat, in ns, all threads):
    psutil's cpu_times count in 10 ms ticks, too coarse for a few hundred tokens."""
    on_cpu = waiting = 0
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        try:
            run, wait, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        on_cpu, waiting = on_cpu + int(run), waiting + int(wait)
    s = proc.num_ctx_switches()
    return on_cpu / 1e9, s.voluntary, s.involuntary, waiting / 1e9


def measure(variant: Variant, model_file: Path, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        if variant.llama_server:
            proc, url, model = start_llama_server(variant.llama_server, model_file, args.threads)
        else:
            with mock.patch.dict(os.environ, variant.env):
                proc, url, model = start_corral(model_file, args.threads, Path(tmp), variant.src)
        try:
            spec = LoadSpec(url, "openai", model, builtin_prompts(), args.requests, max_tokens=args.tokens,
                            temperature=0.0, concurrency=1)
            asyncio.run(warm_up(spec))  # loads the model: the runner exists from here on
            server = psutil.Process(proc.pid)
            runners = server.children(recursive=True)
            if variant.sched:
                set_sched(server, variant.sched)
            me = psutil.Process()
            # The server's own timers (uvicorn's tick, the watchdog) cost CPU and wake-ups per
            # second, not per token: measured idle first and taken off, or a slow run on a busy
            # machine would look like a costly token path.
            idle0, t0 = cpu(server), time.monotonic()
            time.sleep(IDLE_S)
            idle1, t1 = cpu(server), time.monotonic()
            idle_rate = [(a - b) / (t1 - t0) for a, b in zip(idle1, idle0)]
            before = [cpu(server), *(cpu(r) for r in runners), cpu(me)]
            load0 = os.getloadavg()[0]
            run = asyncio.run(run_load(spec))
            after = [cpu(server), *(cpu(r) for r in runners), cpu(me)]
            load1 = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(30)
    summary = summarize(run)
    tokens = max(summary["output_tokens"], 1)
    delta = [[a - b for a, b in zip(x, y)] for x, y in zip(after, before)]
    delta[0] = [max(d - rate * run.wall, 0.0) for d, rate in zip(delta[0], idle_rate)]
    runner = [sum(d[i] for d in delta[1:-1]) for i in range(4)]
    return {"variant": variant.name, "tokens": tokens, "errors": summary["errors"],
            "tok_s": summary["output_tokens_per_s"], "ttft_p50_ms": summary["ttft_s"]["p50"] * 1e3,
            "tpot_p50_ms": summary["tpot_s"]["p50"] * 1e3,
            "server_cpu_ms_per_tok": delta[0][0] / tokens * 1e3,
            "runner_wait_ms_per_tok": runner[3] / tokens * 1e3,
            "runner_cpu_ms_per_tok": runner[0] / tokens * 1e3,
            "client_cpu_ms_per_tok": delta[-1][0] / tokens * 1e3,
            "server_wakeups_per_tok": delta[0][1] / tokens, "server_preempted_per_tok": delta[0][2] / tokens,
            "runner_wakeups_per_tok": runner[1] / tokens, "runner_preempted_per_tok": runner[2] / tokens,
            "load": round((load0 + load1) / 2, 2)}


COLUMNS = ["tok_s", "ttft_p50_ms", "tpot_p50_ms", "server_cpu_ms_per_tok", "runner_cpu_ms_per_tok",
           "runner_wait_ms_per_tok",
           "client_cpu_ms_per_tok", "server_wakeups_per_tok", "server_preempted_per_tok",
           "runner_wakeups_per_tok", "runner_preempted_per_tok", "load"]


def show(rows: list[dict], title: str) -> None:
    short = ["tok/s", "TTFT", "TPOT", "srv ms/t", "run ms/t", "run wait", "cli ms/t", "srv vcs/t", "srv ics/t",
             "run vcs/t", "run ics/t", "load"]
    print(f"\n{title}\n{'variant':<16}" + "".join(f"{c:>10}" for c in short))
    for r in rows:
        print(f"{r['variant']:<16}" + "".join(f"{r[c]:>10.2f}" for c in COLUMNS))


def smollm2_file() -> Path:
    return Store(TEST_MODELS).model_file(ModelName.parse("smollm2:135m"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-file", type=Path, default=None, help="default: smollm2:135m from the test models")
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], type=Variant.parse,
                   help="NAME[:SRC][=ENV=VALUE,...]; default: one variant, this checkout")
    p.add_argument("--llama-server", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    model_file = args.model_file or smollm2_file()
    variants = args.variant or [Variant("corral")]
    if args.llama_server:
        variants.append(Variant("llama-server", llama_server=args.llama_server))
    rounds: list[list[dict]] = []
    for i in range(args.rounds):
        # Alternate the order too, so that no variant always runs right after the same one.
        order = variants if i % 2 == 0 else variants[::-1]
        rows = [measure(v, model_file, args) for v in order]
        rows.sort(key=lambda r: [v.name for v in variants].index(r["variant"]))
        show(rows, f"round {i + 1} ({time.strftime('%H:%M:%S')})")
        rounds.append(rows)
    medians = [{"variant": v.name, **{c: statistics.median(rd[j][c] for rd in rounds) for c in COLUMNS}}
               for j, v in enumerate(variants)]
    show(medians, f"median of {args.rounds} rounds")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rounds": rounds, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
