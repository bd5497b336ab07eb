"""Warm reloads (issue 15 item 7): an unloaded model's prompt-cache states on disk, restored at
its next load, on the real SmolLM2 (a ChatML template with a system prompt) and Gemma-3."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from conftest import GEMMA, SMOL
from helpers import wait_until

from corral.runner.disk_cache import MAGIC, NAME, DiskCache, Pick, cache_key, pick
from corral.runner.prompt_cache import Entry, PromptCache
from corral.runner.protocol import LoadConfig

# A system prompt of a few hundred tokens, as a team's shared assistant instructions are.
SYSTEM = " ".join(
    f"Rule {i}: answer briefly, in plain English, and never mention rule number {i} or the {w} policy."
    for i, w in enumerate(["billing", "privacy", "shipping", "returns", "warranty", "support", "security",
                           "pricing", "refund", "account", "delivery", "contact"]))
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}


def chat(url: str, model: str, user: str, system: str = SYSTEM, keep_alive: int | str = 0) -> dict:
    r = httpx.post(url + "/api/chat", timeout=300, json={
        "model": model, "stream": False, "keep_alive": keep_alive, "options": GREEDY,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
    assert r.status_code == 200, r.text
    return r.json()


def counter(url: str, name: str, model: str = SMOL) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith(f'{name}_total{{model="{model}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


def unloaded(url: str, folder: Path) -> None:
    """Wait until no model is loaded and the runner's files are down."""
    assert wait_until(lambda: not httpx.get(url + "/api/ps", timeout=10).json()["models"], timeout=30)
    assert wait_until(lambda: any(NAME.match(p.name) for p in folder.iterdir()), timeout=10)


def kv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


@pytest.fixture(scope="module")
def cold(start_server):
    """A server that keeps nothing on disk: what a cold reload gives (exact: the same answer as a
    warm one is an exact-mode promise)."""
    return start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_CACHE_DIR_BYTES="0", CORRAL_EXACT="1")


def test_warm_reload_skips_the_system_prompt(start_server, cold, tmp_path):
    folder = tmp_path / "kv"
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_CACHE_DIR=str(folder), CORRAL_EXACT="1")
    first = chat(server.url, SMOL, "What is two plus two?")  # keep_alive 0: unloaded right after
    unloaded(server.url, folder)
    assert counter(server.url, "corral_prompt_cache_disk_restores") == 0
    before = counter(server.url, "corral_prompt_evaluated_tokens")
    warm = chat(server.url, SMOL, "Name a color.")
    evaluated = counter(server.url, "corral_prompt_evaluated_tokens") - before
    assert counter(server.url, "corral_prompt_cache_disk_restores") >= 1
    # The system prompt (and the template around it) came from disk: only the new turn is decoded.
    assert first["prompt_eval_count"] > 250 and warm["prompt_eval_count"] > 250
    assert evaluated < 40, (evaluated, warm["prompt_eval_count"])

    before_cold = counter(cold.url, "corral_prompt_evaluated_tokens")
    reference = chat(cold.url, SMOL, "Name a color.")
    assert counter(cold.url, "corral_prompt_evaluated_tokens") - before_cold == reference["prompt_eval_count"]
    assert warm["message"]["content"] == reference["message"]["content"] and warm["message"]["content"]
    assert not list(Path(folder).glob(".tmp-*"))


def test_a_corrupt_file_is_skipped(start_server, cold, tmp_path):
    folder = tmp_path / "kv"
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_CACHE_DIR=str(folder))
    chat(server.url, SMOL, "What is two plus two?")
    unloaded(server.url, folder)
    for path in kv_files(folder):  # one byte of the state flipped: the checksum no longer matches
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    (folder / "notes.txt").write_text("not ours")  # a name we never made is left alone
    truncated = folder / f"{kv_files(folder)[0].name[:24]}-{'0' * 40}.kv"
    truncated.write_bytes(MAGIC + b'{"key":')
    before = counter(server.url, "corral_prompt_evaluated_tokens")
    answer = chat(server.url, SMOL, "Name a color.", keep_alive="5m")
    assert counter(server.url, "corral_prompt_cache_disk_restores") == 0
    assert counter(server.url, "corral_prompt_evaluated_tokens") - before == answer["prompt_eval_count"]
    assert answer["message"]["content"] == chat(cold.url, SMOL, "Name a color.")["message"]["content"]
    assert not kv_files(folder) and (folder / "notes.txt").exists()  # the bad ones were removed
    assert httpx.get(server.url + "/api/ps", timeout=10).json()["models"]  # the runner is up


def test_the_folder_stays_within_its_bound(start_server, tmp_path):
    folder = tmp_path / "kv"
    folder.mkdir()
    bound = 12 * 2**20  # one SmolLM2 state of ~300 tokens is ~7 MiB: one fits, two do not
    stale = folder / f"{'a' * 24}-{'b' * 40}.kv"  # another model's, least recently used
    stale.write_bytes(b"\0" * (6 * 2**20))
    os.utime(stale, (time.time() - 3600,) * 2)
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_CACHE_DIR=str(folder),
                          CORRAL_CACHE_DIR_BYTES=str(bound))
    for n, system in enumerate([SYSTEM, SYSTEM.replace("Rule", "Law"), SYSTEM.replace("Rule", "Note")]):
        chat(server.url, SMOL, f"Question {n}?", system=system, keep_alive="5m")
    httpx.post(server.url + "/api/generate", json={"model": SMOL, "keep_alive": 0}, timeout=60)
    unloaded(server.url, folder)
    sizes = [p.stat().st_size for p in kv_files(folder)]
    assert sum(sizes) <= bound and not stale.exists(), sizes
    # The newest conversation is the one kept: it comes back.
    answer = chat(server.url, SMOL, "Another question?", system=SYSTEM.replace("Rule", "Note"))
    assert answer["done"] and counter(server.url, "corral_prompt_cache_disk_restores") == 1


def test_another_models_file_is_never_restored(start_server, tmp_path):
    folder = tmp_path / "kv"
    server = start_server(OLLAMA_NUM_PARALLEL="1", CORRAL_CACHE_DIR=str(folder))
    chat(server.url, SMOL, "What is two plus two?")
    unloaded(server.url, folder)
    smol_files = kv_files(folder)
    chat(server.url, GEMMA, "What is two plus two?")
    assert wait_until(lambda: len(kv_files(folder)) > len(smol_files), timeout=30)
    gemma_prefix = next(p.name[:24] for p in kv_files(folder) if p not in smol_files)
    for path in kv_files(folder):
        if path not in smol_files:
            path.unlink()
    # SmolLM2's state, under a name Gemma's runner reads: the header's key still says whose it is.
    forged = folder / f"{gemma_prefix}-{'c' * 40}.kv"
    forged.write_bytes(smol_files[0].read_bytes())
    before = counter(server.url, "corral_prompt_evaluated_tokens", GEMMA)
    gemma = chat(server.url, GEMMA, "Name a color.")
    assert counter(server.url, "corral_prompt_cache_disk_restores", GEMMA) == 0
    # Every prompt token computed afresh: nothing of SmolLM2's was taken for Gemma's.
    assert counter(server.url, "corral_prompt_evaluated_tokens", GEMMA) - before == gemma["prompt_eval_count"]
    assert not forged.exists() and all(p.exists() for p in smol_files)


# -- the file format and the choice of states, without a model ---------------------------------

def config(**kw) -> LoadConfig:
    base = dict(model_path="/store/blobs/sha256-" + "1" * 64, n_slots=1, n_ctx_slot=2048, n_threads=2,
                prompt_cache_bytes=1 << 20, cache_dir="/x", cache_dir_bytes=1 << 20)
    return LoadConfig(**{**base, **kw})


def test_the_key_holds_the_model_and_what_shapes_the_kv():
    key = cache_key(config(), "0.3.36")
    assert key == cache_key(config(n_threads=8, n_slots=4, n_ctx_slot=4096, max_step_s=5), "0.3.36")
    assert key != cache_key(config(model_path="/store/blobs/sha256-" + "2" * 64), "0.3.36")
    assert key != cache_key(config(n_gpu_layers=-1), "0.3.36")
    assert key != cache_key(config(n_batch=256), "0.3.36")
    assert key != cache_key(config(), "0.3.37")
    assert cache_key(config(model_path="/tmp/model.gguf"), "0.3.36") is None
    assert DiskCache.open(config(cache_dir_bytes=0), "0.3.36") is None
    assert DiskCache.open(config(prompt_cache_bytes=0), "0.3.36") is None


def entry(tokens: list[int], uses: int = 0) -> Entry:
    return Entry(tuple(tokens), bytearray(len(tokens) * 10), uses)


def test_pick_keeps_a_shared_system_prompt_once():
    system = list(range(100))
    entries = [entry(system + [500 + i] * 20) for i in range(3)] + [entry(list(range(1000, 1040)), uses=1)]
    picks = pick(entries, budget=10**6)
    assert (picks[0].entry.tokens[:picks[0].n], picks[0].weight) == (tuple(system), 3)
    # The conversations seen once add only their tails to the prefix kept: left out.
    assert [(p.n, p.weight) for p in picks] == [(100, 3), (40, 2)]
    assert [(p.n, p.weight) for p in pick(entries, budget=1000)] == [(100, 3)]
    # Alone, a conversation is kept whole; one restored before outweighs it.
    lone = pick([entry(list(range(200, 260))), entry(list(range(300, 330)), uses=4)], budget=10**6)
    assert [(p.n, p.weight) for p in lone] == [(30, 5), (60, 1)]
    assert all(isinstance(p, Pick) for p in lone)


def test_files_round_trip_and_bad_ones_are_removed(tmp_path):
    cfg = config(cache_dir=str(tmp_path))
    disk = DiskCache.open(cfg, "0.3.36")
    assert disk is not None
    cache = PromptCache(None, 1 << 20)  # add/entries need no context
    cache.add(entry(list(range(50)), uses=2))
    assert disk.save(cache, scratch=0) == 1
    (path,) = kv_files(tmp_path)
    header = json.loads(path.read_bytes()[len(MAGIC):].split(b"\n", 1)[0])
    assert header["key"] == disk.key and header["tokens"] == list(range(50))
    assert header["sha256"] == hashlib.sha256(bytes(500)).hexdigest()

    fresh = PromptCache(None, 1 << 20)
    assert disk.restore(fresh, max_tokens=2048) == 1
    assert [(e.tokens, e.uses, len(e.data)) for e in fresh.entries()] == [(tuple(range(50)), 2, 500)]
    assert disk.restore(PromptCache(None, 1 << 20), max_tokens=49) == 0
    assert path.exists()  # too long for a smaller context: not restored, not bad either

    other = DiskCache(tmp_path, 1 << 20, "f" * 64)  # another model: its own name prefix
    forged = tmp_path / f"{'f' * 24}-{'0' * 40}.kv"
    forged.write_bytes(path.read_bytes())
    assert other.restore(PromptCache(None, 1 << 20), 2048) == 0
    assert not forged.exists() and path.exists()
