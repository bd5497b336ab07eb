"""Soak: minutes of mixed load over two models against a live corral; reports what drifted.

    python benchmarks/soak.py --base-url http://127.0.0.1:11434 [--minutes 10] [--clients 12]

Load (loopback only): streaming and non-streaming generate/chat, embeddings, cancelled streams,
and bursts past the queue bound (503s expected). Reports requests by outcome, RSS of the server
and its runners at the start and end, and p99 latency per minute. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter, defaultdict

import httpx
import psutil

MODELS = ("smollm2:135m", "gemma3:270m")
PROMPTS = ["Tell me about the sea.", "Explain photosynthesis.", "Write a haiku about snow.", "What is 2+2?"]


def rss_by_process(base_url: str) -> dict[str, int]:
    port = int(base_url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            server = psutil.Process(conn.pid)
            out = {"server": server.memory_info().rss}
            for child in server.children():
                out[f"runner {child.pid}"] = child.memory_info().rss
            return out
    return {}


async def one(client: httpx.AsyncClient, rng: random.Random) -> tuple[str, float]:
    kind = rng.choice(["stream", "stream", "whole", "chat", "embed", "cancel"])
    model = rng.choice(MODELS)
    t = time.perf_counter()
    try:
        if kind == "embed":
            r = await client.post("/api/embed", json={"model": model, "input": rng.sample(PROMPTS, 2)})
            return (f"{kind} {r.status_code}", time.perf_counter() - t)
        body = {"model": model, "options": {"num_predict": rng.randint(4, 48)}}
        path = "/api/chat" if kind == "chat" else "/api/generate"
        if kind == "chat":
            body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
        else:
            body["prompt"] = rng.choice(PROMPTS)
        if kind == "whole":
            body["stream"] = False
            r = await client.post(path, json=body)
            return (f"{kind} {r.status_code}", time.perf_counter() - t)
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return (f"{kind} {r.status_code}", time.perf_counter() - t)
            lines = 0
            async for line in r.aiter_lines():
                if "error" in json.loads(line):
                    return (f"{kind} error-line", time.perf_counter() - t)
                lines += 1
                if kind == "cancel" and lines >= 2:
                    break
            return (f"{kind} {r.status_code}", time.perf_counter() - t)
    except httpx.HTTPError as exc:
        return (f"{kind} {type(exc).__name__}", time.perf_counter() - t)


async def soak(base_url: str, minutes: float, clients: int) -> dict:
    rng = random.Random(1)
    rss_by_minute: dict[int, dict[str, int]] = {}
    outcomes: Counter = Counter()
    latencies: dict[int, list[float]] = defaultdict(list)
    start = time.monotonic()
    end = start + minutes * 60
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        async def worker() -> None:
            while time.monotonic() < end:
                outcome, latency = await one(client, rng)
                outcomes[outcome] += 1
                latencies[int((time.monotonic() - start) // 60)].append(latency)

        async def bursts() -> None:
            while time.monotonic() < end:
                await asyncio.sleep(45)
                results = await asyncio.gather(*(one(client, rng) for _ in range(80)))
                for outcome, _ in results:
                    outcomes["burst " + outcome] += 1

        async def sample_rss() -> None:
            while time.monotonic() < end:
                rss_by_minute[int((time.monotonic() - start) // 60)] = await asyncio.to_thread(rss_by_process, base_url)
                await asyncio.sleep(60)

        await asyncio.gather(bursts(), sample_rss(), *(worker() for _ in range(clients)))
    p99 = {m: sorted(v)[int(len(v) * 0.99) - 1] if v else None for m, v in sorted(latencies.items())}
    return {"outcomes": dict(sorted(outcomes.items())), "p99_latency_s_by_minute": p99,
            "rss_mib_by_minute": {m: {k: round(v / 2**20) for k, v in r.items()} for m, r in rss_by_minute.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:11434")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--clients", type=int, default=12)
    args = p.parse_args()
    before = rss_by_process(args.base_url)
    report = asyncio.run(soak(args.base_url, args.minutes, args.clients))
    report["rss_start"], report["rss_end"] = before, rss_by_process(args.base_url)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
