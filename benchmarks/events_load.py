"""Does watching cost throughput? C=8 closed-loop load (corral bench's client) with no viewer
and with 50 SSE subscribers on GET /api/events, alternating round by round.

    python benchmarks/events_load.py [--model smollm2:135m] [--rounds 3] [--subscribers 50]
        [--prompts 32] [--tokens 64]

The subscribers run in a process of their own (reading and parsing every event, as the page
does), so the load client's loop is not theirs. Each round reports output tokens/s; the median
per variant and their ratio come last. A machine whose load changes moves both alike; report
the ratio with `uptime`'s load. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serving import start_corral

SRC = Path(__file__).resolve().parent.parent / "src"


def start(models: Path, slots: int) -> tuple[subprocess.Popen, str]:
    return start_corral(SRC, models, slots)


async def subscribe(url: str, n: int) -> None:
    """n subscribers that read and parse everything until killed."""
    async def one(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/events") as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    json.loads(line[6:])

    async with httpx.AsyncClient(base_url=url, timeout=None, limits=httpx.Limits(max_connections=None)) as c:
        await asyncio.gather(*(one(c) for _ in range(n)))


def load(url: str, model: str, prompts: int, tokens: int) -> float:
    from corral.bench.load import LoadSpec, run_load
    from corral.bench.prompts import load_prompts
    from corral.bench.report import summarize

    spec = LoadSpec(url, "ollama", model, load_prompts(None), prompts, tokens, 0.0, concurrency=8)
    summary = summarize(asyncio.run(run_load(spec)))
    assert summary["completed"] == prompts, summary
    return summary["output_tokens_per_s"]


def main() -> None:
    if sys.argv[1:2] == ["--subscribe"]:
        asyncio.run(subscribe(sys.argv[2], int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    sys.path.insert(0, str(SRC))
    proc, url = start(args.models, 8)
    speeds: dict[str, list[float]] = {"no viewer": [], f"{args.subscribers} subscribers": []}
    try:
        load(url, args.model, args.prompts, args.tokens)  # load, warm up, fill the prompt cache: not counted
        for _ in range(args.rounds):
            for label in speeds:
                viewers = None
                if label != "no viewer":
                    viewers = subprocess.Popen([sys.executable, __file__, "--subscribe", url, str(args.subscribers)])
                    time.sleep(2)  # all connected, snapshots flowing
                try:
                    speeds[label].append(load(url, args.model, args.prompts, args.tokens))
                finally:
                    if viewers:
                        viewers.kill()
                        viewers.wait()
                print(f"{label:>16}: {speeds[label][-1]:7.1f} tok/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(15)
    medians = {label: statistics.median(v) for label, v in speeds.items()}
    for label, value in medians.items():
        print(f"median {label:>16}: {value:7.1f} tok/s")
    base, watched = medians.values()
    print(f"ratio (with / without): {watched / base:.3f}   load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
