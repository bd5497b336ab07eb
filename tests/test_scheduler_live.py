"""The scheduler's rules against live servers on the real models, with small budgets and short
keep-alives so that each rule shows itself in seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from conftest import GEMMA, SMOL
from helpers import ps, run_all, stream_generate, wait_until, warm

from corral.config import Settings
from corral.models.gguf_info import read_gguf
from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store
from corral.scheduler.memory import estimate

MiB = 2**20
CTX = 2048  # conftest's OLLAMA_CONTEXT_LENGTH
LONG = "Write a very long story about a dragon and a knight."


def est(store: Path, model: str, slots: int) -> int:
    info = read_gguf(Store(store).model_file(ModelName.parse(model)))
    return estimate(info, CTX, slots, prompt_cache=Settings().prompt_cache_bytes).total


def greedy(n: int) -> dict:
    return {"temperature": 0, "num_predict": n}


# -- the seed's four scenarios ----------------------------------------------------------------

def test_parallelism_one_second_waits_and_two_models_run_in_parallel(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    warm(server.url, SMOL)
    a, b = asyncio.run(run_all(server.url, SMOL, [LONG, LONG], greedy(24)))
    first, second = sorted([a, b], key=lambda r: r["token_times"][0])
    assert second["positions"] == [1]
    assert second["token_times"][0] >= first["token_times"][-1]
    assert first["final"]["eval_count"] == second["final"]["eval_count"] == 24

    warm(server.url, GEMMA)

    async def both():
        return await asyncio.gather(stream_generate(server.url, SMOL, LONG, greedy(60)),
                                    stream_generate(server.url, GEMMA, LONG, greedy(60)))
    smol, gemma = asyncio.run(both())
    assert smol["token_times"][0] < gemma["end"] and gemma["token_times"][0] < smol["end"]
    loaded = ps(server.url)
    assert {SMOL, GEMMA} <= set(loaded) and loaded[SMOL]["pid"] != loaded[GEMMA]["pid"]


def test_models_that_do_not_fit_together_take_turns(start_server, model_store):
    budget = max(est(model_store, SMOL, 2), est(model_store, GEMMA, 1)) + 8 * MiB
    server = start_server(CORRAL_MEMORY_LIMIT=str(budget), OLLAMA_NUM_PARALLEL="1",
                          CORRAL_NUM_PARALLEL_SMOLLM2_135M="2")
    warm(server.url, SMOL)

    async def scenario():
        long_smol = asyncio.create_task(stream_generate(server.url, SMOL, LONG, greedy(80)))
        await asyncio.sleep(0.3)
        gemma = asyncio.create_task(stream_generate(server.url, GEMMA, LONG, greedy(8)))
        await asyncio.sleep(0.2)
        # The loaded model keeps serving while gemma waits for memory (no head-of-line blocking).
        short_smol = await stream_generate(server.url, SMOL, "Hi", greedy(4))
        return await long_smol, await gemma, short_smol

    long_smol, gemma, short_smol = asyncio.run(scenario())
    assert short_smol["end"] < long_smol["end"]
    assert gemma["positions"] and gemma["token_times"][0] > long_smol["end"]
    assert gemma["final"]["eval_count"] == 8 and long_smol["final"]["eval_count"] == 80
    assert set(ps(server.url)) == {GEMMA}


# -- slots, queue bound -------------------------------------------------------------------------

def test_auto_and_per_model_parallel(start_server, model_store):
    server = start_server(CORRAL_NUM_PARALLEL_GEMMA3_270M="2")
    warm(server.url, SMOL)
    warm(server.url, GEMMA)
    loaded = ps(server.url)
    assert loaded[SMOL]["slots_total"] == 4 and loaded[GEMMA]["slots_total"] == 2
    # A budget that holds one slot's KV but not four: auto gives 1, and gemma never fits at all.
    tight = start_server(CORRAL_MEMORY_LIMIT=str(est(model_store, SMOL, 1) + 8 * MiB))
    warm(tight.url, SMOL)
    assert ps(tight.url)[SMOL]["slots_total"] == 1
    r = httpx.post(tight.url + "/api/generate", json={"model": GEMMA, "prompt": "hi"}, timeout=30)
    assert r.status_code == 507
    assert "MiB" in r.json()["error"] and "budget" in r.json()["error"]


def test_bounded_queue_rejects_exactly_the_excess(start_server):
    p, q, n = 2, 3, 10
    server = start_server(OLLAMA_NUM_PARALLEL=str(p), OLLAMA_MAX_QUEUE=str(q))
    warm(server.url, SMOL)
    results = asyncio.run(run_all(server.url, SMOL, [LONG] * n, greedy(32)))
    busy = [r for r in results if r["status"] == 503]
    done = [r for r in results if r["status"] == 200]
    assert len(busy) == n - p - q
    assert all(r["headers"].get("retry-after") for r in busy)
    assert all(r["error"] == "server busy, please try again.  maximum pending requests exceeded" for r in busy)
    assert len(done) == p + q and all(r["final"]["eval_count"] == 32 and not r["error"] for r in done)
    metrics = httpx.get(server.url + "/metrics").text
    assert f"corral_rejected_requests_total {float(n - p - q)}" in metrics
    # ... and the server serves normally afterwards.
    assert asyncio.run(stream_generate(server.url, SMOL, "Hi", greedy(4)))["final"]["eval_count"] == 4


def test_fifo_order_with_one_slot(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    warm(server.url, SMOL)

    async def staggered():
        tasks = []
        for i in range(4):
            # Long enough that the first is still running when the last arrives.
            tasks.append(asyncio.create_task(stream_generate(server.url, SMOL, f"{i}: {LONG}", greedy(64))))
            await asyncio.sleep(0.1)
        return await asyncio.gather(*tasks)

    results = asyncio.run(staggered())
    starts = [r["token_times"][0] for r in results]
    assert starts == sorted(starts)
    assert [r["positions"][0] for r in results[1:]] == [1, 2, 3]


# -- keep-alive, load/unload -----------------------------------------------------------------------

def test_keep_alive_rules(start_server):
    server = start_server(OLLAMA_KEEP_ALIVE="1s")
    url = server.url
    warm(url, SMOL)
    assert SMOL in ps(url)
    assert wait_until(lambda: SMOL not in ps(url), timeout=5)  # the server default, 1s
    # Per request: a duration string, then 0 (unload when idle), then negative (forever).
    asyncio.run(stream_generate(url, SMOL, "Hi", greedy(2), keep_alive="1m"))
    assert SMOL in ps(url)
    time.sleep(1.5)
    assert SMOL in ps(url)
    asyncio.run(stream_generate(url, SMOL, "Hi", greedy(2), keep_alive=0))
    assert wait_until(lambda: SMOL not in ps(url), timeout=3)
    asyncio.run(stream_generate(url, SMOL, "Hi", greedy(2), keep_alive=-1))
    assert ps(url)[SMOL]["expires_at"].startswith("2318")
    # Empty prompt with keep_alive 0 unloads.
    r = httpx.post(url + "/api/generate", json={"model": SMOL, "keep_alive": 0}, timeout=30).json()
    assert r["done_reason"] == "unload"
    assert wait_until(lambda: SMOL not in ps(url), timeout=3)
    # `corral stop` unloads too.
    warm(url, SMOL, keep_alive=-1)
    cli = subprocess.run([sys.executable, "-m", "corral.cli", "stop", SMOL], capture_output=True, text=True,
                         env={**os.environ, "OLLAMA_HOST": url.removeprefix("http://")}, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert wait_until(lambda: SMOL not in ps(url), timeout=3)


def test_num_ctx_change_reloads_once_without_losing_requests(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    url = server.url

    async def scenario():
        small = asyncio.create_task(stream_generate(url, SMOL, LONG, {**greedy(40), "num_ctx": 1024}))
        await asyncio.sleep(0.5)
        big = asyncio.create_task(stream_generate(url, SMOL, LONG, {**greedy(8), "num_ctx": 2048}))
        return await small, await big

    small, big = asyncio.run(scenario())
    assert small["final"]["eval_count"] == 40 and big["final"]["eval_count"] == 8
    assert big["token_times"][0] > small["end"]
    after = ps(url)[SMOL]
    assert after["context_length"] == 2048
    # A smaller num_ctx is served by the bigger runner: no reload (no thrashing).
    asyncio.run(stream_generate(url, SMOL, "Hi", {**greedy(4), "num_ctx": 1024}))
    assert ps(url)[SMOL]["pid"] == after["pid"]


def test_num_thread_and_num_gpu_are_load_options(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_NUM_THREADS="2")
    url = server.url
    asyncio.run(stream_generate(url, SMOL, "Hi", greedy(2)))
    two = ps(url)[SMOL]["pid"]
    threads_two = psutil.Process(two).num_threads()
    # Another thread count is another runner: the model is reloaded with one llama.cpp thread.
    one = asyncio.run(stream_generate(url, SMOL, "Hi", {**greedy(2), "num_thread": 1}))
    assert one["final"]["eval_count"] == 2
    pid = ps(url)[SMOL]["pid"]
    assert pid != two and psutil.Process(pid).num_threads() == threads_two - 1
    # Asking for the CPU on a machine without a GPU build changes nothing: same runner.
    asyncio.run(stream_generate(url, SMOL, "Hi", {**greedy(2), "num_thread": 1, "num_gpu": 0}))
    assert ps(url)[SMOL]["pid"] == pid and ps(url)[SMOL]["size_vram"] == 0
    for bad in ({"num_thread": 0}, {"num_gpu": -2}, {"num_thread": "two"}):
        r = httpx.post(url + "/api/generate", json={"model": SMOL, "prompt": "Hi", "options": bad})
        assert r.status_code == 400 and "error" in r.json(), (bad, r.text)


def test_two_busy_models_share_the_threads(start_server):
    # Exact mode: with the fast kernels (flash attention) the thread count may move the numbers.
    server = start_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_NUM_THREADS="2", CORRAL_EXACT="1")
    url = server.url
    # Twice each, so that the solo text, like the shared run's, comes from the slot's kept prefix.
    solo = {m: [asyncio.run(stream_generate(url, m, LONG, greedy(64)))["text"] for _ in range(2)][1]
            for m in (SMOL, GEMMA)}
    assert ps(url)[SMOL]["threads"] == ps(url)[GEMMA]["threads"] == 2

    async def together():
        runs = [asyncio.create_task(stream_generate(url, m, LONG, greedy(64))) for m in (SMOL, GEMMA)]
        shares = set()
        while not all(r.done() for r in runs):
            loaded = await asyncio.to_thread(ps, url)
            if all(loaded[m]["slots_busy"] for m in (SMOL, GEMMA)):
                shares.add((loaded[SMOL]["threads"], loaded[GEMMA]["threads"]))
            await asyncio.sleep(0.05)
        return [await r for r in runs], shares

    (smol, gemma), shares = asyncio.run(together())
    assert shares == {(1, 1)}  # while both generate, one thread each of the two
    # The thread count changes where rows are computed, not the numbers: the same greedy text.
    assert smol["text"] == solo[SMOL] and gemma["text"] == solo[GEMMA]
    busy = lambda: any(m["slots_busy"] for m in ps(url).values())
    assert wait_until(lambda: not busy(), timeout=10)
    asyncio.run(stream_generate(url, SMOL, "Hi", greedy(2)))
    assert ps(url)[SMOL]["threads"] == 2  # alone again: both threads


# -- failures ---------------------------------------------------------------------------------------

def test_runner_killed_mid_stream(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    url = server.url
    warm(url, SMOL)
    warm(url, GEMMA)
    pid = ps(url)[SMOL]["pid"]

    async def scenario():
        victim = asyncio.create_task(stream_generate(url, SMOL, LONG, greedy(400)))
        await asyncio.sleep(0.2)
        queued = asyncio.create_task(stream_generate(url, SMOL, LONG, greedy(6)))
        while not (await asyncio.to_thread(ps, url))[SMOL]["queue"]:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # let the victim stream a few tokens
        os.kill(pid, signal.SIGKILL)
        other = await stream_generate(url, GEMMA, "Hi", greedy(4))
        return await victim, await queued, other

    victim, queued, other = asyncio.run(scenario())
    assert victim["error"] and "exited" in victim["error"], victim
    assert victim["final"] is None  # it ended with the error line, not a done object
    assert queued["final"]["eval_count"] == 6 and not queued["error"]
    assert other["final"]["eval_count"] == 4
    assert ps(url)[SMOL]["pid"] != pid
    assert wait_until(lambda: not psutil.pid_exists(pid), timeout=10)  # reaped, not left a zombie
    # No leaked reservation: what /metrics reserves is exactly what /api/ps shows loaded.
    metrics = httpx.get(url + "/metrics").text
    reserved = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("corral_memory_reserved_bytes")))
    assert reserved == sum(m["size"] for m in ps(url).values())


def test_load_failure_is_an_error_and_frees_the_reservation(start_server, model_store, tmp_path):
    # A GGUF whose header parses but whose tensor data is cut off: llama.cpp refuses to load it.
    store = Store(model_store)
    good = store.model_file(ModelName.parse(SMOL))
    broken = tmp_path / "broken.gguf"
    with open(good, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(good.stat().st_size // 2))
    layer = store.add_blob_file(broken)
    store.write_manifest(ModelName.parse("broken:test"), [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    try:
        server = start_server()
        r = httpx.post(server.url + "/api/generate", json={"model": "broken:test", "prompt": "hi", "stream": False},
                       timeout=60)
        assert r.status_code == 500 and "failed to load" in r.json()["error"]
        assert ps(server.url) == {}
        assert "corral_memory_reserved_bytes 0.0" in httpx.get(server.url + "/metrics").text
        assert asyncio.run(stream_generate(server.url, SMOL, "Hi", greedy(3)))["final"]["eval_count"] == 3
    finally:
        store.delete(ModelName.parse("broken:test"))


def test_client_disconnect_frees_the_slot(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    url = server.url
    warm(url, SMOL)
    with httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/api/generate", json={"model": SMOL, "prompt": LONG, "options": greedy(2000)}) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i == 3:
                    break
    assert wait_until(lambda: ps(url)[SMOL]["slots_busy"] == 0, timeout=2)
    nxt = asyncio.run(stream_generate(url, SMOL, "Hi", greedy(3)))
    assert nxt["final"]["eval_count"] == 3 and not nxt["positions"]


# -- visibility ---------------------------------------------------------------------------------

def test_ps_and_metrics(server, model_store):
    warm(server.url, SMOL)
    asyncio.run(stream_generate(server.url, SMOL, "Hi", greedy(5)))
    # The estimate reserves the embedding context too (made on a runner's first embed request):
    # measure a runner that has one, with a long input (its chunk buffers are allocated).
    r = httpx.post(server.url + "/api/embed", json={"model": SMOL, "input": "word " * 1500}, timeout=300)
    assert r.status_code == 200, r.text
    m = ps(server.url)[SMOL]
    for key in ("name", "model", "size", "size_vram", "digest", "details", "expires_at", "context_length",
                "slots_busy", "slots_total", "queue", "size_measured"):
        assert key in m
    assert m["details"]["family"] == "llama" and m["details"]["quantization_level"] == "Q4_1"
    assert m["size"] == est(model_store, SMOL, m["slots_total"])
    assert 0.5 < m["size_measured"] / m["size"] < 1.5  # the estimate holds against the runner's RSS
    text = httpx.get(server.url + "/metrics").text
    for name in ("corral_requests_running", "corral_requests_waiting", "corral_models_loaded",
                 "corral_memory_reserved_bytes", "corral_memory_budget_bytes", "corral_rejected_requests_total",
                 "corral_prompt_tokens_total", "corral_generated_tokens_total", "corral_queue_seconds_bucket",
                 "corral_time_to_first_token_seconds_bucket", "corral_inter_token_seconds_bucket",
                 "corral_request_seconds_bucket"):
        assert name in text
    generated = [l for l in text.splitlines() if l.startswith(f'corral_generated_tokens_total{{model="{SMOL}"}}')]
    assert generated and float(generated[0].split()[-1]) >= 5


def test_eviction_takes_the_shortest_keep_alive(start_server, model_store):
    """Three names for the SmolLM2 weights (three runners); room for two: loading the third evicts
    the idle one with the least keep-alive left, not the least recently used."""
    store = Store(model_store)
    names = ["evict-a:1", "evict-b:1", "evict-c:1"]
    for n in names:
        store.copy(ModelName.parse(SMOL), ModelName.parse(n))
    try:
        budget = 2 * est(model_store, SMOL, 1) + 16 * MiB
        server = start_server(CORRAL_MEMORY_LIMIT=str(budget), OLLAMA_NUM_PARALLEL="1")
        warm(server.url, "evict-a:1", keep_alive="10m")
        warm(server.url, "evict-b:1", keep_alive="1m")  # more recent, but shorter keep-alive
        warm(server.url, "evict-c:1")
        assert wait_until(lambda: set(ps(server.url)) == {"evict-a:1", "evict-c:1"}, timeout=10), ps(server.url)
    finally:
        for n in names:
            store.delete(ModelName.parse(n))
