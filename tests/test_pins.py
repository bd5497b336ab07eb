"""Pinned and pre-loaded models, eviction by cost, and no thrash between two models that do not
fit together (eviction.py). Fast rules on the fake runner of test_scheduler_unit; the same rules
live on the real models with a small budget."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from conftest import GEMMA, SMOL
from helpers import ps, stream_generate, wait_until
from test_scheduler_live import est
from test_scheduler_unit import FakeHandle, make, run, spec

from corral.config import FOREVER
from corral.scheduler.scheduler import NeverFits

MiB = 2**20


def test_a_pinned_model_outlives_its_keep_alive_and_is_never_evicted():
    async def main():
        s = make(memory_mib=250, pinned=("pin:1",))
        await run(s, spec("pin:1", 200), keep_alive=0.05)
        await asyncio.sleep(0.2)
        (runner,) = s.runners
        assert runner.spec.name == "pin:1" and runner.expires_at == FOREVER
        with pytest.raises(NeverFits, match=r"pinned model 'pin:1' \(CORRAL_PIN\)"):
            await run(s, spec("other:1", 200))
        assert not s.unload("pin:1") or s.runners  # keep_alive 0 does not unload it either
        await run(s, spec("small:1", 40))  # what fits beside it still loads
        assert {r.spec.name for r in s.runners} == {"pin:1", "small:1"}
    asyncio.run(main())


def test_eviction_keeps_the_model_that_is_asked_for_and_slow_to_load():
    async def main():
        s = make(memory_mib=350)
        hot, cold = spec("hot:1", 100), spec("cold:1", 100)
        for _ in range(5):
            await run(s, hot)
        await run(s, cold)  # more recent than hot: LRU alone would unload hot
        s.predictor.loaded("hot:1", 5.0)
        await run(s, spec("third:1", 100))
        await run(s, spec("fourth:1", 100))
        assert "hot:1" in {r.spec.name for r in s.runners} and "cold:1" not in {r.spec.name for r in s.runners}
    asyncio.run(main())


def _alternating(s, a, b, clients: int, each: int, n: int):
    """Closed-loop clients, every other one for the other model; (model, start, end) per request."""
    async def client(sp) -> list[tuple[str, float, float]]:
        spans = []
        for _ in range(each):
            start = time.monotonic()
            await run(s, sp, n=n)
            spans.append((sp.name, start, time.monotonic()))
        return spans
    return asyncio.gather(*(client(a if i % 2 else b) for i in range(clients)))


def _interleaved(spans: list[tuple[str, float, float]]) -> bool:
    """Neither model waited for all of the other's requests (no starvation)."""
    first = {m: min(s for n, s, _ in spans if n == m) for m, _, _ in spans}
    last = {m: max(e for n, _, e in spans if n == m) for m, _, _ in spans}
    return all(first[m] < last[o] for m in first for o in first if o != m)


def test_two_models_alternating_under_a_tight_budget_do_not_thrash():
    async def main():
        s = make(memory_mib=250, swap_window=1.0)  # one of the two at a time
        a, b = spec("a:1", 200), spec("b:1", 200)
        spans = [x for c in await _alternating(s, a, b, clients=4, each=10, n=20) for x in c]  # ~0.1 s each
        loads = len(FakeHandle.loads)
        assert len(spans) == 40 and 2 < loads <= 40 // 3, loads  # a swap a window (1 s), not a request
        assert _interleaved(spans)
    asyncio.run(main())


# -- live -------------------------------------------------------------------------------------

def _loads(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {m: float(v) for m, v in re.findall(r'corral_model_loads_total\{model="([^"]+)"\} (\S+)', text)}


def test_live_preload_and_pin(start_server, model_store):
    budget = max(est(model_store, SMOL, 1), est(model_store, GEMMA, 1)) + 8 * MiB  # one at a time
    server = start_server(CORRAL_MEMORY_LIMIT=str(budget), OLLAMA_NUM_PARALLEL="1", OLLAMA_KEEP_ALIVE="1s",
                          CORRAL_PIN=SMOL, CORRAL_PRELOAD=SMOL)
    assert wait_until(lambda: SMOL in ps(server.url), timeout=60), "preloaded without any request"
    r = httpx.post(server.url + "/api/generate", json={"model": SMOL, "prompt": "Hi", "keep_alive": "1s",
                                                        "options": {"num_predict": 4}}, timeout=120)
    assert r.status_code == 200
    time.sleep(2.5)  # past its keep-alive
    assert SMOL in ps(server.url)
    refused = httpx.post(server.url + "/api/generate", json={"model": GEMMA, "prompt": "Hi"}, timeout=120)
    assert refused.status_code == 507, refused.text
    assert "pinned" in refused.json()["error"] and SMOL in refused.json()["error"]
    assert set(ps(server.url)) == {SMOL}


@pytest.mark.timeout(600)
def test_live_alternating_models_do_not_thrash(start_server, model_store):
    budget = max(est(model_store, SMOL, 1), est(model_store, GEMMA, 1)) + 8 * MiB
    # A window well past a request's time (auto is twice the load time), so that each turn holds
    # several requests even on a busy machine.
    server = start_server(CORRAL_MEMORY_LIMIT=str(budget), OLLAMA_NUM_PARALLEL="1", OLLAMA_KEEP_ALIVE="1m",
                          CORRAL_SWAP_WINDOW="20s")
    options = {"temperature": 0, "num_predict": 4}

    async def client(model: str, n: int) -> list[dict]:
        return [await stream_generate(server.url, model, "Say something.", options) for _ in range(n)]

    async def scenario():
        return await asyncio.gather(*(client(m, 3) for m in (SMOL, GEMMA, SMOL, GEMMA)))

    per_client = asyncio.run(scenario())
    results = [r for rs in per_client for r in rs]
    assert len(results) == 12 and all(r["final"] and r["final"]["eval_count"] > 0 for r in results), \
        [r["error"] for r in results if r["error"]]
    loads = _loads(server.url)
    assert set(loads) == {SMOL, GEMMA} and sum(loads.values()) <= 6, loads  # 12 alternating requests
    spans = [(m, r["start"], r["end"]) for m, rs in zip((SMOL, GEMMA, SMOL, GEMMA), per_client) for r in rs]
    assert _interleaved(spans)
