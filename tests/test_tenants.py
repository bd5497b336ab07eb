"""Keys, tenants, lanes, fair shares and deadlines on the real model, one slot
(OLLAMA_NUM_PARALLEL=1) so the order in which requests take it is the order of their first tokens.

One CPU thread: on a shared 2-core machine llama.cpp's threads spin at every op's barrier, and
with two of them a busy neighbour made a 2-token request take 7 s instead of 40 ms."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from helpers import wait_until

MODEL = "smollm2:135m"
SHORT = {"num_predict": 4, "temperature": 0}
# A generation that cannot end soon: the grammar allows no end before 5000 numbers.
ENDLESS: dict[str, Any] = {"prompt": "Count from 1 to 1000, one number a line.", "options": {"num_predict": -1, "temperature": 0},
           "format": {"type": "array", "items": {"type": "integer"}, "minItems": 5000}}
SECRET = "sk-canary-never-logged-7f3a"
KEYS = {
    "key-a": {"tenant": "a", "weight": 3},
    "key-b": {"tenant": "b", "weight": 1},
    "key-hold": {"tenant": "hold"},
    "key-small": {"tenant": "small", "max_queued": 2},
    "key-lazy": {"tenant": "lazy", "priority": "batch", "max_priority": "batch"},
    "key-gemma": {"tenant": "gemma-only", "models": ["gemma3:270m"]},
    SECRET: {"tenant": "canary"},
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path: Path, keys: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": keys}))
    tmp.replace(path)  # the server never reads half a file


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    write_keys(path, KEYS)
    return path


@pytest.fixture(scope="module")
def srv(start_server, keys_file):
    server = start_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_NUM_THREADS="1", CORRAL_KEYS_FILE=str(keys_file),
                          CORRAL_API_KEY="single-key")
    r = httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": ""}, headers=auth("key-hold"),
                   timeout=120)
    assert r.status_code == 200, r.text
    return server


async def stream(url: str, key: str, name: str, options: dict = SHORT, headers: dict | None = None,
                 **body) -> dict:
    """One streamed /api/generate: its status, error, and when its first token came."""
    rec: dict = {"name": name, "status": None, "error": None, "first": None, "headers": {}}
    body = {"prompt": "Say hi.", "options": options, **body}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async with client.stream("POST", "/api/generate", headers={**auth(key), **(headers or {})},
                                 json={"model": MODEL, **body}) as r:
            rec["status"], rec["headers"] = r.status_code, dict(r.headers)
            if r.status_code != 200:
                rec["error"] = json.loads(await r.aread())["error"]
                return rec
            async for line in r.aiter_lines():
                obj = json.loads(line)
                if "error" in obj:
                    rec["error"] = obj["error"]
                elif rec["first"] is None and (obj.get("response") or obj.get("done")):
                    rec["first"] = time.monotonic()
    return rec


def queued(url: str) -> int:
    models = httpx.get(url + "/api/ps", headers=auth("key-hold"), timeout=10).json()["models"]
    return sum(m["queue"] for m in models if m["name"] == MODEL)


async def hold_slot(url: str) -> asyncio.Task:
    """A long request holding the one slot; returns once it has it."""
    task = asyncio.create_task(stream(url, "key-hold", "hold", **ENDLESS))
    await wait_until_async(lambda: _busy(url))
    return task


def _busy(url: str) -> bool:
    models = httpx.get(url + "/api/ps", headers=auth("key-hold"), timeout=10).json()["models"]
    return any(m["name"] == MODEL and m["slots_busy"] == 1 for m in models)


async def wait_until_async(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def enqueue(url: str, tasks: list, key: str, name: str, **kw) -> None:
    """Submit one request and return once it is queued (so arrival order is the submit order)."""
    before = queued(url)
    tasks.append(asyncio.create_task(stream(url, key, name, **kw)))
    await wait_until_async(lambda: queued(url) > before)


async def release(url: str, holder: asyncio.Task) -> None:
    """End the holder (a client that disconnects frees its slot at the runner's next step)."""
    assert not holder.done(), holder  # it held the slot all along
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


def test_wrong_or_missing_key_is_401_and_both_kinds_of_key_work(srv):
    assert httpx.get(srv.url + "/api/tags").status_code == 401
    r = httpx.get(srv.url + "/api/tags", headers=auth("key-a-wrong"))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized: missing or wrong API key"
    assert httpx.get(srv.url + "/api/tags", headers=auth("key-a")).status_code == 200
    assert httpx.get(srv.url + "/api/tags", headers=auth("single-key")).status_code == 200
    assert httpx.get(srv.url + "/api/tags", headers={"x-api-key": "key-b"}).status_code == 200


def test_a_key_limited_to_other_models_gets_403(srv):
    r = httpx.post(srv.url + "/api/generate", headers=auth("key-gemma"),
                   json={"model": MODEL, "prompt": "hi", "stream": False, "options": SHORT}, timeout=60)
    assert r.status_code == 403 and MODEL in r.json()["error"]


def test_bad_priority_is_400(srv):
    r = httpx.post(srv.url + "/api/generate", headers={**auth("key-a"), "X-Corral-Priority": "urgent"},
                   json={"model": MODEL, "prompt": "hi", "stream": False, "options": SHORT}, timeout=60)
    assert r.status_code == 400 and "X-Corral-Priority" in r.json()["error"]
    r = httpx.post(srv.url + "/api/chat", headers=auth("key-a"), timeout=60,
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "priority": "now"})
    assert r.status_code == 400 and "priority" in r.json()["error"]


def test_interactive_starts_before_queued_batch_requests(srv):
    async def main():
        holder = await hold_slot(srv.url)
        tasks: list = []
        for i in range(4):
            await enqueue(srv.url, tasks, "key-a", f"batch{i}", headers={"X-Corral-Priority": "batch"})
        await enqueue(srv.url, tasks, "key-b", "interactive", priority="interactive")  # the body field
        await release(srv.url, holder)
        return await asyncio.gather(*tasks)

    recs = asyncio.run(main())
    assert all(r["status"] == 200 and r["error"] is None for r in recs), recs
    order = [r["name"] for r in sorted(recs, key=lambda r: r["first"])]
    assert order == ["interactive", "batch0", "batch1", "batch2", "batch3"]


def test_key_default_lane_is_batch_and_capped_openai_body_field(srv):
    """The "lazy" key's requests run in the batch lane, even asking for interactive (its allowance);
    the OpenAI client sends the body field."""
    def started(lane: str) -> float:
        text = httpx.get(srv.url + "/metrics", headers=auth("key-hold"), timeout=10).text
        m = re.search(rf'corral_tenant_requests_started_total{{lane="{lane}",tenant="lazy"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="key-lazy")
    before = started("batch")
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                         extra_body={"priority": "interactive"})
    assert out.choices[0].message.content is not None
    assert started("batch") == before + 1 and started("interactive") == 0


def test_weights_3_to_1_share_the_slot_in_that_ratio(srv):
    async def main():
        holder = await hold_slot(srv.url)
        tasks: list = []
        for _ in range(12):  # both tenants flood: a, b, a, b, ... all queued
            await enqueue(srv.url, tasks, "key-a", "a")
            await enqueue(srv.url, tasks, "key-b", "b")
        await release(srv.url, holder)
        return await asyncio.gather(*tasks)

    recs = asyncio.run(main())
    assert all(r["status"] == 200 and r["error"] is None for r in recs), recs
    order = [r["name"] for r in sorted(recs, key=lambda r: r["first"])]
    first = Counter(order[:12])  # the window while both still have requests queued
    print("order", "".join(order), first)
    assert 8 <= first["a"] <= 10 and first["a"] + first["b"] == 12, order  # 9:3 expected


def test_tenant_over_its_queue_gets_429_while_another_is_served(srv):
    async def main():
        holder = await hold_slot(srv.url)
        tasks: list = []
        await enqueue(srv.url, tasks, "key-small", "small1")
        await enqueue(srv.url, tasks, "key-small", "small2")
        over = await stream(srv.url, "key-small", "small3")
        await enqueue(srv.url, tasks, "key-b", "other")
        await release(srv.url, holder)
        return over, await asyncio.gather(*tasks)

    over, served = asyncio.run(main())
    assert over["status"] == 429 and "at most 2" in over["error"], over
    assert int(over["headers"]["retry-after"]) >= 1
    assert all(r["status"] == 200 and r["error"] is None and r["first"] for r in served), served
    text = httpx.get(srv.url + "/metrics", headers=auth("key-hold"), timeout=10).text
    assert 'corral_tenant_requests_refused_total{status="429",tenant="small"} 1.0' in text


def test_deadlines_refused_up_front_expiring_in_the_queue_and_while_running(srv):
    def generate(deadline: str, **body) -> httpx.Response:
        body = {"prompt": "Say hi.", "options": SHORT, **body}
        return httpx.post(srv.url + "/api/generate", headers={**auth("key-b"), "X-Corral-Deadline": deadline},
                          json={"model": MODEL, "stream": False, **body}, timeout=120)

    assert generate("soon").status_code == 400 and generate("-1").status_code == 400
    assert generate("600").json()["done_reason"] != "deadline"  # one measured: how long a request holds a slot
    # Running: stopped at the deadline, as a generation ends.
    r = generate("3", **ENDLESS)
    assert r.status_code == 200 and r.json()["done_reason"] == "deadline", r.text
    assert r.json()["eval_count"] > 0 and r.json()["response"].startswith("[")  # it ran, then was cut

    async def main():
        holder = await hold_slot(srv.url)
        tasks: list = []
        for i in range(6):
            await enqueue(srv.url, tasks, "key-a", f"q{i}")
        # Seven requests ahead of it (one holding the slot): its predicted start is seconds away.
        refused = await asyncio.to_thread(generate, "0.05")
        # Alone behind the holder, a deadline it may meet as far as the server can tell (half a
        # second past the wait predicted for it there), but the holder does not end.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        expired = await asyncio.to_thread(generate, "0.01")  # asks the prediction (503), or already expires
        if expired.status_code == 503:
            wait = float(re.search(r"predicted wait (\S+) s", expired.json()["error"]).group(1))
            expired = await asyncio.to_thread(generate, f"{wait + 0.5:.2f}")
        await release(srv.url, holder)
        return refused, expired

    refused, expired = asyncio.run(main())
    assert refused.status_code == 503 and "predicted wait" in refused.json()["error"], refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert expired.status_code == 504 and "deadline exceeded" in expired.json()["error"], expired.text


def test_keys_file_is_reloaded_when_it_changes(srv, keys_file):
    assert httpx.get(srv.url + "/api/tags", headers=auth("key-new")).status_code == 401
    write_keys(keys_file, {**KEYS, "key-new": {"tenant": "new"}})
    assert wait_until(lambda: httpx.get(srv.url + "/api/tags", headers=auth("key-new")).status_code == 200,
                      timeout=10)
    r = httpx.post(srv.url + "/api/generate", headers=auth("key-new"),
                   json={"model": MODEL, "prompt": "hi", "stream": False, "options": SHORT}, timeout=120)
    assert r.status_code == 200 and r.json()["done"]
    keys_file.write_text("{not json")  # a broken file keeps the keys in force
    time.sleep(1.2)
    assert httpx.get(srv.url + "/api/tags", headers=auth("key-new")).status_code == 200
    write_keys(keys_file, KEYS)
    assert wait_until(lambda: httpx.get(srv.url + "/api/tags", headers=auth("key-new")).status_code == 401,
                      timeout=10)
    # SIGHUP: a change the modification time does not show (set back) is read on the signal.
    seen = keys_file.stat().st_mtime_ns
    write_keys(keys_file, {**KEYS, "key-hup": {"tenant": "hup"}})
    os.utime(keys_file, ns=(seen, seen))
    time.sleep(1.2)
    assert httpx.get(srv.url + "/api/tags", headers=auth("key-hup")).status_code == 401
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: httpx.get(srv.url + "/api/tags", headers=auth("key-hup")).status_code == 200,
                      timeout=10)
    write_keys(keys_file, KEYS)


def test_keys_never_appear_in_the_server_log(srv):
    for key in (SECRET, "key-a-wrong"):  # a known key used, a wrong one refused
        httpx.post(srv.url + "/api/generate", headers=auth(key), timeout=120,
                   json={"model": MODEL, "prompt": "hi", "stream": False, "options": SHORT})
    log = srv.log.read_text(errors="replace")
    assert "keys file" in log  # the log does say what happened (loads, the broken file)
    for key in [*KEYS, "key-new", "key-a-wrong", "single-key"]:
        assert key not in log, key
