"""Continuous batching on the real models: concurrency, queueing past the slots, batch invariance."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from conftest import MODELS, SMOL

PROMPTS = ["Write a long story about a dragon.", "Explain how rain forms, in detail.",
           "List many animals that live in the sea.", "Describe the city of Paris at length."]


async def stream_generate(url: str, model: str, prompt: str, options: dict) -> dict:
    """Stream one request; record when each token arrived and any queue positions seen."""
    record = {"text": "", "token_times": [], "positions": [], "final": None}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async with client.stream("POST", "/api/generate",
                                 json={"model": model, "prompt": prompt, "options": options}) as r:
            assert r.status_code == 200, await r.aread()
            async for line in r.aiter_lines():
                obj = json.loads(line)
                assert "error" not in obj, obj
                if "queue_position" in obj:
                    record["positions"].append(obj["queue_position"])
                elif obj.get("done"):
                    record["final"] = obj
                    record["end"] = time.monotonic()
                elif obj.get("response"):
                    record["text"] += obj["response"]
                    record["token_times"].append(time.monotonic())
    return record


async def run_all(url: str, model: str, prompts: list[str], options: dict) -> list[dict]:
    return await asyncio.gather(*(stream_generate(url, model, p, options) for p in prompts))


def warm(server, model: str) -> None:
    with server.client() as c:
        assert c.post("/api/generate", json={"model": model, "prompt": ""}).json()["done_reason"] == "load"


def test_two_streams_interleave(server):
    warm(server, SMOL)
    a, b = asyncio.run(run_all(server.url, SMOL, PROMPTS[:2], {"temperature": 0, "num_predict": 40}))
    # Batching, not turn-taking: each got tokens before the other finished.
    assert a["token_times"][0] < b["end"] and b["token_times"][0] < a["end"]
    assert a["final"]["eval_count"] == b["final"]["eval_count"] == 40


def test_four_slots_eight_clients(server):
    warm(server, SMOL)
    prompts = [PROMPTS[i % 4] for i in range(8)]
    results = asyncio.run(run_all(server.url, SMOL, prompts, {"temperature": 0, "num_predict": 24}))
    waited = [r for r in results if r["positions"]]
    assert len(waited) == 4  # 4 ran at once, 4 waited with a queue position
    assert sorted(r["positions"][0] for r in waited) == [1, 2, 3, 4]
    assert all(r["final"]["eval_count"] == 24 for r in results)
    # A waiting request started only after some running request finished.
    first_end = min(r["end"] for r in results if not r["positions"])
    assert all(r["token_times"][0] >= first_end - 0.05 for r in waited)


@pytest.mark.parametrize("model", MODELS)
def test_batch_invariance_greedy(server, model):
    warm(server, model)
    options = {"temperature": 0, "num_predict": 48}
    (alone,) = asyncio.run(run_all(server.url, model, PROMPTS[:1], options))
    together = asyncio.run(run_all(server.url, model, PROMPTS, options))
    assert alone["text"] and together[0]["text"] == alone["text"]
    # ...and the others ran alongside it, not before or after.
    assert all(r["token_times"][0] < together[0]["end"] for r in together[1:])
