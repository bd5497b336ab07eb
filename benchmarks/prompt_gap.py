"""How long a generating stream stalls while a huge prompt arrives on the same model.

Streams one greedy generation, and once it is flowing sends a chat of many messages and a
generate with a ~100k-token prompt to the same model; prints the stream's inter-token gaps
(median, p99, max) before, during and after. Loopback only; the server must already run:

    OLLAMA_CONTEXT_LENGTH=8192 OLLAMA_NUM_PARALLEL=2 corral serve &
    python benchmarks/prompt_gap.py --url http://127.0.0.1:11434
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx


async def stream(url: str, model: str, n: int, times: list[float]) -> dict:
    body = {"model": model, "prompt": "Write a very long story about a dragon and a knight.",
            "options": {"temperature": 0, "num_predict": n}}
    async with httpx.AsyncClient(base_url=url, timeout=600) as c, c.stream("POST", "/api/generate", json=body) as r:
        async for line in r.aiter_lines():
            obj = json.loads(line)
            if obj.get("response"):
                times.append(time.monotonic())
            if "error" in obj or obj.get("done"):
                return obj
    return {}


async def huge(url: str, model: str, messages: int, prompt_tokens: int) -> tuple[dict, dict, float, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        t0 = time.monotonic()
        chat = {"model": model, "stream": False, "options": {"temperature": 0, "num_predict": 4},
                "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
                             for i in range(messages)]}
        a = (await c.post("/api/chat", json=chat)).json()
        words = " ".join(f"w{i}" for i in range(prompt_tokens // 2))
        gen = {"model": model, "stream": False, "prompt": words, "options": {"temperature": 0, "num_predict": 4}}
        b = (await c.post("/api/generate", json=gen)).json()
        return a, b, t0, time.monotonic()


def summary(gaps: list[float]) -> str:
    if not gaps:
        return "no gaps"
    gaps = sorted(gaps)
    p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]
    return f"n={len(gaps)} median {statistics.median(gaps)*1e3:.0f} ms, p99 {p99*1e3:.0f} ms, max {gaps[-1]*1e3:.0f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--tokens", type=int, default=600)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--prompt-tokens", type=int, default=100_000)
    args = ap.parse_args()
    times: list[float] = []
    task = asyncio.create_task(stream(args.url, args.model, args.tokens, times))
    while len(times) < 20:
        if task.done():
            raise SystemExit(f"the stream ended early: {task.result()}")
        await asyncio.sleep(0.01)
    a, b, t0, t1 = await huge(args.url, args.model, args.messages, args.prompt_tokens)
    final = await task
    gaps = [(t, t - s) for s, t in zip(times, times[1:])]
    print("chat:", {k: a.get(k) for k in ("done_reason", "prompt_eval_count", "error")})
    print("generate:", {k: b.get(k) for k in ("done_reason", "prompt_eval_count", "error")})
    print("stream:", final.get("done_reason") or final.get("error"), f"huge requests took {t1 - t0:.1f}s")
    print("gaps before:", summary([g for t, g in gaps if t < t0]))
    print("gaps during:", summary([g for t, g in gaps if t0 <= t <= t1]))
    print("gaps after: ", summary([g for t, g in gaps if t > t1]))


if __name__ == "__main__":
    asyncio.run(main())
