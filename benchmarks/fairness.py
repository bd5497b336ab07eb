"""Fairness: an interactive user beside a batch flood, with lanes and fair shares on and off.

    python benchmarks/fairness.py                        # smollm2:135m from the test store
    python benchmarks/fairness.py --model-file m.gguf    # any GGUF (created in a temporary store)

Starts its own corral servers on loopback. A flood tenant runs 16 closed-loop clients; an
interactive tenant sends one request every 2 s. Four phases, `--seconds` each:

- idle: the interactive tenant alone (its TTFT with nobody else);
- off:  no keys file: one tenant, one lane, FIFO (the flood's queue is in front of it);
- on:   a keys file: the flood's key defaults to the batch lane, the interactive one to the
        interactive lane (and fair shares between the two tenants); batch requests leave one slot
        free for the interactive lane (scheduler/reserve.py);
- on, no reserve: the same with CORRAL_INTERACTIVE_RESERVE=0 (lanes order the queue only).

Reports the interactive tenant's TTFT p50/p99 per phase (and its wait for a slot, the
scheduler's part of it: the final line's load_duration), the flood's answered requests per phase
(what the reserved slot costs it), and the ETA error: for every queue line a
stream got (flood and interactive, each flood phase), |predicted start - actual start|, where the
predicted start is the line's arrival + eta_s and the actual start is the first token's arrival
minus the prompt evaluation time (Ollama's prompt_eval_duration). Writes benchmarks/results/fairness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TEST_STORE = Path.home() / ".cache" / "corral" / "test-models"
FLOOD_KEY, USER_KEY = "sk-bench-flood", "sk-bench-user"
FLOOD_PROMPT = "Write a long story about a dragon who learns to cook."
USER_PROMPT = "What is the capital of France? Answer in one sentence."
FLOOD_TOKENS, USER_TOKENS = 32, 8
GRACE_S = 60.0


@dataclass
class Sample:
    sent: float
    first: float | None = None
    prompt_s: float = 0.0
    wait_s: float | None = None  # admission to a slot (Ollama's load_duration: lookup, queue, load)
    etas: list[tuple[float, float]] = field(default_factory=list)  # (line arrival, eta_s)
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.sent


async def request(client: httpx.AsyncClient, model: str, prompt: str, n: int, key: str | None) -> Sample:
    sample = Sample(time.monotonic())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "prompt": prompt, "options": {"temperature": 0, "num_predict": n}}
    try:
        async with client.stream("POST", "/api/generate", json=body, headers=headers) as r:
            if r.status_code != 200:
                sample.error = f"{r.status_code} {(await r.aread())[:200]!r}"
                return sample
            async for line in r.aiter_lines():
                obj = json.loads(line)
                now = time.monotonic()
                if "error" in obj:
                    sample.error = obj["error"]
                elif "queue_position" in obj:
                    if obj.get("eta_s") is not None:
                        sample.etas.append((now, obj["eta_s"]))
                elif obj.get("done"):
                    sample.prompt_s = obj.get("prompt_eval_duration", 0) / 1e9
                    sample.wait_s = obj.get("load_duration", 0) / 1e9
                elif obj.get("response") and sample.first is None:
                    sample.first = now
    except httpx.HTTPError as exc:
        sample.error = type(exc).__name__
    return sample


async def phase(url: str, model: str, seconds: float, flood: bool, keys: bool) -> dict[str, list[Sample]]:
    """`seconds` of load; then no new request is sent, and those in flight get up to GRACE_S to
    finish (the rest are cancelled, so a phase is bounded). The flood's are not cut at once: the
    ETAs the queued streams got assume the requests ahead of them run."""
    stop = time.monotonic() + seconds
    out: dict[str, list[Sample]] = {"user": [], "flood": []}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def flooder() -> None:
            while time.monotonic() < stop:
                out["flood"].append(await request(client, model, FLOOD_PROMPT, FLOOD_TOKENS,
                                                  FLOOD_KEY if keys else None))

        async def user() -> None:
            await asyncio.sleep(1.0)  # the flood fills the queue first
            pending = []
            while time.monotonic() < stop:
                pending.append(asyncio.ensure_future(request(client, model, USER_PROMPT, USER_TOKENS,
                                                             USER_KEY if keys else None)))
                await asyncio.sleep(2.0)
            done, late = await asyncio.wait(pending, timeout=GRACE_S)
            for task in late:
                task.cancel()
            out["user"] = [t.result() for t in pending if t in done]
            out["user_unfinished"] = [Sample(0.0, error="unfinished")] * len(late)

        users = asyncio.ensure_future(user())
        flooders = [asyncio.ensure_future(flooder()) for _ in range(16 if flood else 0)]
        await asyncio.sleep(seconds)
        if flooders:
            _, late = await asyncio.wait(flooders, timeout=GRACE_S)
            for task in late:
                task.cancel()
        await asyncio.gather(users, *flooders, return_exceptions=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, models: Path, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        full = {**os.environ, "OLLAMA_HOST": self.url.removeprefix("http://"), "OLLAMA_MODELS": str(models),
                "PYTHONPATH": str(ROOT / "src"), **env}
        self.log = open(log, "ab")  # noqa: SIM115  # the server writes it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "corral.cli", "serve"], env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"corral did not start; see {log}")

    def warm(self, model: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for prompt in (FLOOD_PROMPT, USER_PROMPT):  # loads, and measures a step for the ETAs
            r = httpx.post(self.url + "/api/generate", headers=headers, timeout=600, json={
                "model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 16}})
            r.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(int(q * len(values)), len(values) - 1)], 3)


def ttft_stats(run: dict[str, list[Sample]]) -> dict:
    samples = run["user"] + run.get("user_unfinished", [])
    ttfts = [s.ttft for s in samples if s.ttft is not None]
    # The scheduler's part of the TTFT, apart from the engine's (which a busy machine slows).
    waits = [s.wait_s for s in samples if s.wait_s is not None]
    return {"n": len(ttfts), "errors": sorted({s.error for s in samples if s.error is not None}),
            "p50_s": pct(ttfts, 0.5), "p99_s": pct(ttfts, 0.99),
            "slot_wait_p50_s": pct(waits, 0.5), "slot_wait_p99_s": pct(waits, 0.99)}


def eta_errors(samples: list[Sample]) -> list[float]:
    errors = []
    for s in samples:
        if s.first is None:
            continue
        started = s.first - s.prompt_s
        errors += [abs(at + eta - started) for at, eta in s.etas]
    return errors


def create_from_file(models: Path, path: Path, log: Path) -> str:
    """A temporary store holding the GGUF as `fairness:bench`."""
    name = "fairness:bench"
    server = Server(models, {"CORRAL_ALLOW_LOCAL_FROM": str(path.parent)}, log)
    try:
        r = httpx.post(server.url + "/api/create", json={"model": name, "from": str(path), "stream": False},
                       timeout=600)
        r.raise_for_status()
    finally:
        server.stop()
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2:135m", help="a model in --models (default: the test store's)")
    ap.add_argument("--models", type=Path, default=TEST_STORE)
    ap.add_argument("--model-file", type=Path, help="a GGUF file to use instead (a temporary store)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--slots", default="4")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fairness.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corral-fairness-"))
    log = tmp / "serve.log"
    models, model = args.models, args.model
    if args.model_file:
        models = tmp / "models"
        model = create_from_file(models, args.model_file.resolve(), log)
    keys = tmp / "keys.toml"
    keys.write_text(f'[keys.{FLOOD_KEY}]\ntenant = "flood"\npriority = "batch"\n\n'
                    f'[keys.{USER_KEY}]\ntenant = "interactive"\npriority = "interactive"\n')
    env = {"OLLAMA_NUM_PARALLEL": args.slots, "OLLAMA_MAX_QUEUE": "512", "OLLAMA_KEEP_ALIVE": "10m"}
    load_before = os.getloadavg()
    results: dict = {"model": model, "seconds_per_phase": args.seconds, "slots": int(args.slots),
                     "flood_clients": 16, "user_every_s": 2.0, "flood_num_predict": FLOOD_TOKENS,
                     "user_num_predict": USER_TOKENS}
    with_keys = {**env, "CORRAL_KEYS_FILE": str(keys)}
    on = Server(models, with_keys, log)
    try:
        on.warm(model, USER_KEY)
        idle = asyncio.run(phase(on.url, model, args.seconds, flood=False, keys=True))
        lanes = asyncio.run(phase(on.url, model, args.seconds, flood=True, keys=True))
    finally:
        on.stop()
    no_reserve = Server(models, {**with_keys, "CORRAL_INTERACTIVE_RESERVE": "0"}, log)
    try:
        no_reserve.warm(model, USER_KEY)
        unreserved = asyncio.run(phase(no_reserve.url, model, args.seconds, flood=True, keys=True))
    finally:
        no_reserve.stop()
    off_server = Server(models, env, log)
    try:
        off_server.warm(model, None)
        off = asyncio.run(phase(off_server.url, model, args.seconds, flood=True, keys=False))
    finally:
        off_server.stop()
    runs = {"lanes_on": lanes, "lanes_on_no_reserve": unreserved, "lanes_off": off}
    results["interactive_ttft"] = {"idle": ttft_stats(idle), **{name: ttft_stats(run) for name, run in runs.items()}}
    # The flood's throughput: requests answered in the phase (the reserved slot's cost).
    results["flood_requests"] = {name: sum(s.first is not None and s.error is None for s in run["flood"])
                                 for name, run in runs.items()}
    # The flood's ETAs (batch lane) are the current queue's: interactive requests that arrive
    # later go ahead of them, so theirs are also shown apart.
    for name, run in runs.items():
        for who, samples in (("all", run["user"] + run["flood"]), ("interactive", run["user"]),
                             ("flood", run["flood"])):
            errs = eta_errors(samples)
            results.setdefault("eta_abs_error_s", {}).setdefault(name, {})[who] = {
                "n": len(errs), "median": pct(errs, 0.5), "p90": pct(errs, 0.9)}
    results["loadavg_before"] = [round(x, 2) for x in load_before]
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["cpus"] = os.cpu_count()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
