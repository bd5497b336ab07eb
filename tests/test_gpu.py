"""GPU placement on a real CUDA build of llama-cpp-python and a real NVIDIA GPU.

Skipped where the build cannot offload or NVML sees no GPU (CI has none); docs/GPU.md says how
these were run on a lent H100/H200 and what they measured.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import SMOL
from helpers import ps, run_all, wait_until

from corral.config import Settings
from corral.scheduler.memory import GPU_RESERVE_BYTES, Pool, gpu_inventory
from corral.scheduler.scheduler import Scheduler

GPUS = gpu_inventory()
pytestmark = pytest.mark.skipif(not GPUS, reason="needs a CUDA build of llama-cpp-python and an NVIDIA GPU")

PROMPT = "Name three colours of the rainbow."
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 1}


def vram_used(index: int = 0) -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    finally:
        pynvml.nvmlShutdown()


def generate(url: str, model: str, **body) -> dict:
    r = httpx.post(url + "/api/generate", json={"model": model, "prompt": PROMPT, "stream": False,
                                                  "options": GREEDY, **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_inventory_gives_each_gpu_a_pool_and_three_models_per_gpu():
    s = Scheduler(Settings())
    for g in GPUS:
        assert s.pools[Pool(g.index)] == g.free - GPU_RESERVE_BYTES > 0
    assert s.max_loaded == 3 * len(GPUS)


def test_model_runs_wholly_on_the_gpu_and_unloading_frees_vram(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_EXACT="1")  # exact: the repeat reuses a prefix
    before = vram_used()
    first = generate(server.url, SMOL, keep_alive="5m")
    assert first["eval_count"] == GREEDY["num_predict"] and first["response"].strip()
    model = ps(server.url)[SMOL]
    assert model["size_vram"] == model["size"] > 0
    # The runner's weights, KV cache and CUDA context are really in VRAM, not only booked there.
    grown = vram_used() - before
    assert grown > 0.5 * model["size"], (grown, model["size"])
    # Greedy decoding on the GPU is repeatable.
    assert generate(server.url, SMOL)["response"] == first["response"]

    httpx.post(server.url + "/api/generate", json={"model": SMOL, "keep_alive": 0}, timeout=60)
    assert wait_until(lambda: SMOL not in ps(server.url), timeout=30)
    assert wait_until(lambda: vram_used() - before < 0.2 * model["size"], timeout=30), vram_used() - before


def test_parallel_requests_are_batched_on_the_gpu(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_EXACT="1")  # exact: batch-invariant
    solo = generate(server.url, SMOL)["response"]
    prompts = [PROMPT] + [f"Write one sentence about the number {n}." for n in range(3)]
    records = asyncio.run(run_all(server.url, SMOL, prompts, GREEDY))
    for r in records:
        assert r["error"] is None and r["final"]["eval_count"] == GREEDY["num_predict"], r
    # Same prompt, same greedy tokens, whether it ran alone or beside three others.
    assert records[0]["text"] == solo


def test_two_models_share_the_gpu(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="2")
    copy = "smol-gpu-copy:latest"
    assert httpx.post(server.url + "/api/copy", json={"source": SMOL, "destination": copy}).status_code == 200
    try:
        a, b = generate(server.url, SMOL), generate(server.url, copy)
        assert a["response"] == b["response"]
        loaded = ps(server.url)
        assert loaded[SMOL]["size_vram"] > 0 and loaded[copy]["size_vram"] > 0
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": copy})


def test_num_gpu_zero_runs_on_the_cpu(start_server):
    server = start_server()
    generate(server.url, SMOL, options={**GREEDY, "num_gpu": 0})
    assert ps(server.url)[SMOL]["size_vram"] == 0


def test_cuda_off_keeps_models_on_the_cpu(start_server):
    server = start_server(CORRAL_CUDA="0")
    generate(server.url, SMOL)
    assert ps(server.url)[SMOL]["size_vram"] == 0
