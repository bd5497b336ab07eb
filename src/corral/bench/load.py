"""Load generation: closed loop with C clients, or open loop with Poisson arrivals."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from corral.bench.client import Result, send


@dataclass(frozen=True)
class LoadSpec:
    base_url: str
    api: str  # "openai" | "ollama"
    model: str
    prompts: list[str]
    num_prompts: int
    max_tokens: int = 128
    temperature: float = 0.0
    concurrency: int = 1  # closed loop
    request_rate: float = 0.0  # > 0: open loop, Poisson arrivals per second
    seed: int = 0


@dataclass
class RunResult:
    spec: LoadSpec
    results: list[Result]
    wall: float  # first send to last byte


def _client(spec: LoadSpec) -> httpx.AsyncClient:
    # A fresh connection per request: some servers (llama-server) drop idle keep-alive connections,
    # and a request sent on one that is closing fails without being the server's fault.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=spec.base_url, timeout=httpx.Timeout(600.0), limits=limits)


async def warm_up(spec: LoadSpec) -> Result:
    async with _client(spec) as client:
        return await send(client, spec.api, spec.model, spec.prompts[0], 8, spec.temperature)


async def run_load(spec: LoadSpec, on_done: Callable[[Result], None] = lambda r: None) -> RunResult:
    prompts = [spec.prompts[i % len(spec.prompts)] for i in range(spec.num_prompts)]
    results: list[Result] = []

    async with _client(spec) as client:
        async def one(prompt: str) -> None:
            result = await send(client, spec.api, spec.model, prompt, spec.max_tokens, spec.temperature)
            results.append(result)
            on_done(result)

        start = time.perf_counter()
        if spec.request_rate > 0:
            rng = random.Random(spec.seed)
            tasks = []
            for prompt in prompts:
                tasks.append(asyncio.create_task(one(prompt)))
                await asyncio.sleep(rng.expovariate(spec.request_rate))
            await asyncio.gather(*tasks)
        else:
            queue = list(reversed(prompts))

            async def worker() -> None:
                while queue:
                    await one(queue.pop())

            await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        end = max((r.end for r in results), default=start)
    return RunResult(spec, results, end - start)
