"""Kernel modes (runner/kernels.py): fast by default, exact on request (option, Modelfile, env),
flash attention and the KV cache's type as Ollama's OLLAMA_FLASH_ATTENTION / OLLAMA_KV_CACHE_TYPE,
and the memory estimate and slot choice that follow from the cache's real size."""

from __future__ import annotations

import httpx
import pytest
from conftest import SMOL
from helpers import ps

from corral.config import Settings
from corral.models.gguf_info import read_gguf
from corral.models.modelfile import ModelfileError, add_parameter
from corral.models.store import ModelName, Store
from corral.runner.kernels import KernelChoice, KvType, choose
from corral.scheduler.memory import estimate
from corral.scheduler.specs import SpecResolver

GREEDY = {"temperature": 0, "num_predict": 24}
PROMPT = "Name three rivers in Europe."


# -- pure -------------------------------------------------------------------------------------

def test_settings_read_exact_flash_attention_and_kv_type():
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env({"CORRAL_EXACT": "1", "OLLAMA_FLASH_ATTENTION": "0", "OLLAMA_KV_CACHE_TYPE": "Q8_0"})
    assert (s.exact, s.flash_attention, s.kv_cache_type) == (True, False, KvType.Q8_0)
    assert Settings().exact is False and Settings().flash_attention is None and Settings().kv_cache_type == "f16"
    assert Settings.from_env({"OLLAMA_KV_CACHE_TYPE": "q5_1"}).kv_cache_type == KvType.F16  # unknown: f16


def test_kv_sizes_are_ggml_block_sizes():
    assert [t.bytes_per_value for t in KvType] == [2.0, 34 / 32, 18 / 32]


def test_quantized_kv_needs_flash_attention_else_f16():
    # Quantized KV turns flash attention on where nothing forbids it (as llama.cpp requires).
    assert choose(False, None, KvType.Q8_0, True) == KernelChoice(False, True, KvType.Q8_0)
    assert choose(False, True, KvType.Q4_0, True) == KernelChoice(False, True, KvType.Q4_0)
    # Off by the setting, by exact mode or by the model: f16, as Ollama falls back.
    assert choose(False, False, KvType.Q8_0, True) == KernelChoice(False, False, KvType.F16)
    assert choose(True, None, KvType.Q8_0, True) == KernelChoice(True, False, KvType.F16)
    assert choose(False, None, KvType.Q4_0, False) == KernelChoice(False, False, KvType.F16)
    # f16: the setting (None: the device's default) passes through; exact always turns it off.
    assert choose(False, None, KvType.F16, True) == KernelChoice(False, None, KvType.F16)
    assert choose(True, True, KvType.F16, True) == KernelChoice(True, False, KvType.F16)


def test_modelfile_exact_parameter_is_a_boolean():
    params: dict = {}
    add_parameter(params, "exact", "true")
    assert params == {"exact": True}
    add_parameter(params, "exact", "0")
    assert params == {"exact": False}
    with pytest.raises(ModelfileError):
        add_parameter(params, "exact", "maybe")


# -- the estimate and the slots it allows (the real GGUF, no server) ----------------------------

def test_q8_0_kv_fits_twice_the_slots_of_f16_under_one_budget(model_store):
    info = read_gguf(Store(model_store).model_file(ModelName.parse(SMOL)))
    f16, q8 = (estimate(info, 2048, 4, kv_bytes_per_value=t.bytes_per_value) for t in (KvType.F16, KvType.Q8_0))
    assert q8.kv_cache == pytest.approx(f16.kv_cache * 34 / 64, rel=1e-6)
    # Four q8_0 slots take about the memory of two f16 ones (17/16 as much KV).
    two_f16 = estimate(info, 2048, 2).kv_cache
    assert two_f16 < q8.kv_cache < 1.07 * two_f16
    # The scheduler's auto slots (OLLAMA_NUM_PARALLEL unset): under a budget that holds four
    # q8_0 slots, q8_0 gets 4 and f16 only 1.
    budget = estimate(info, 2048, 4, prompt_cache=Settings().prompt_cache_bytes,
                      kv_bytes_per_value=KvType.Q8_0.bytes_per_value).total
    store = Store(model_store)
    slots = {}
    for kv in KvType:
        settings = Settings(models_dir=model_store, memory_limit=budget, context_length=2048, kv_cache_type=kv)
        spec = SpecResolver(settings, store).resolve(SMOL)
        slots[kv] = spec.n_slots
        assert spec.kv_type == kv and (spec.n_slots == 1 or spec.estimate().total <= budget)
    assert slots == {KvType.F16: 1, KvType.Q8_0: 4, KvType.Q4_0: 4}


# -- live ---------------------------------------------------------------------------------------

def chat(url: str, model: str, **options) -> dict:
    r = httpx.post(url + "/api/chat", json={"model": model, "messages": [{"role": "user", "content": PROMPT}],
                                            "stream": False, "options": {**GREEDY, **options}}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def sensible(reply: dict) -> str:
    text = reply["message"]["content"]
    assert reply["eval_count"] > 3 and sum(c.isalpha() for c in text) > 10, reply
    return text


def test_fast_by_default_exact_on_request_and_by_modelfile(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    fast = sensible(chat(server.url, SMOL))
    loaded = ps(server.url)[SMOL]
    assert loaded["exact"] is False and loaded["kv_cache_type"] == "f16"
    pid = loaded["pid"]
    # options.exact: a load option, so another runner (as a num_ctx change).
    exact = sensible(chat(server.url, SMOL, exact=True))
    loaded = ps(server.url)[SMOL]
    assert loaded["exact"] is True and loaded["pid"] != pid
    # The same model in both modes gives the same opening (kernels move numbers, not meaning).
    assert fast.split()[:3] == exact.split()[:3], (fast, exact)
    # A created model's PARAMETER exact true.
    try:
        r = httpx.post(server.url + "/api/create", json={"model": "corral-exact:1", "from": SMOL,
                                                         "parameters": {"exact": True}}, timeout=60)
        assert r.status_code == 200, r.text
        sensible(chat(server.url, "corral-exact:1"))
        assert ps(server.url)["corral-exact:1"]["exact"] is True
    finally:
        httpx.request("DELETE", server.url + "/api/delete", json={"model": "corral-exact:1"})
    # A bad value is a 400, before anything loads.
    r = httpx.post(server.url + "/api/generate", json={"model": SMOL, "prompt": "hi", "options": {"exact": "yes"}})
    assert r.status_code == 400


def test_corral_exact_makes_every_runner_exact(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_EXACT="1")
    sensible(chat(server.url, SMOL))
    assert ps(server.url)[SMOL]["exact"] is True


def test_q8_0_kv_cache_takes_less_memory(start_server):
    """Same slots and context: the q8_0 runner's estimate and its measured RSS are below f16's
    by about the KV saved, and it answers sensibly; ps reports the type."""
    runs = {}
    for kv in ("f16", "q8_0"):
        server = start_server(OLLAMA_NUM_PARALLEL="4", OLLAMA_KV_CACHE_TYPE=kv)
        text = sensible(chat(server.url, SMOL))
        runs[kv] = (ps(server.url)[SMOL], text)
        server.stop()
    f16, q8 = runs["f16"][0], runs["q8_0"][0]
    assert (f16["kv_cache_type"], q8["kv_cache_type"]) == ("f16", "q8_0") and q8["slots_total"] == 4
    saved = f16["size"] - q8["size"]  # the estimate's KV difference: 30/64 of f16's KV
    assert saved > 50 * 2**20, saved
    # Measured: most of the saving is real resident memory (the KV buffer is cleared, so touched).
    assert f16["size_measured"] - q8["size_measured"] > 0.5 * saved, (f16["size_measured"], q8["size_measured"])
    assert runs["f16"][1].split()[:3] == runs["q8_0"][1].split()[:3], runs


def test_flash_attention_off_falls_back_to_f16_kv(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_KV_CACHE_TYPE="q4_0", OLLAMA_FLASH_ATTENTION="0")
    sensible(chat(server.url, SMOL))
    assert ps(server.url)[SMOL]["kv_cache_type"] == "f16"
