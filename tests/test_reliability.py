"""Overload, faults, hostile input, shutdown and exposure, on live servers with the real models."""

from __future__ import annotations

import asyncio
import json
import random
import signal

import httpx
import psutil
import pytest
from conftest import GEMMA, SMOL
from helpers import gguf_with_template, ps, stream_generate, wait_until, warm

from corral.models.store import MEDIA_MODEL, Layer, ModelName, Store

LONG = "Write a very long story about a dragon and a knight."
BUSY = "server busy, please try again.  maximum pending requests exceeded"


def greedy(n: int) -> dict:
    return {"temperature": 0, "num_predict": n}


@pytest.mark.parametrize("models", [(SMOL,), (SMOL, GEMMA)])
def test_overload_rejects_exactly_the_excess(start_server, models):
    server = start_server(OLLAMA_NUM_PARALLEL="2", OLLAMA_MAX_QUEUE="4")
    for m in models:
        warm(server.url, m)

    async def burst():
        return await asyncio.gather(*(stream_generate(server.url, models[i % len(models)], LONG, greedy(16))
                                      for i in range(50)))

    results = asyncio.run(burst())
    rejected = [r for r in results if r["status"] == 503]
    served = [r for r in results if r["status"] == 200]
    assert len(served) == 2 * len(models) + 4 and len(rejected) == 50 - len(served)
    assert all(r["error"] == BUSY and r["headers"]["retry-after"] for r in rejected)
    assert all(r["final"]["eval_count"] == 16 and not r["error"] for r in served)
    after = asyncio.run(stream_generate(server.url, SMOL, "Hi", greedy(3)))
    assert after["final"]["eval_count"] == 3


def test_disconnect_storm_leaves_nothing_behind(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="4")
    warm(server.url, SMOL)
    rng = random.Random(7)

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            async with c.stream("POST", "/api/generate",
                                json={"model": SMOL, "prompt": f"{i} {LONG}", "options": greedy(200)}) as r:
                drop_after = rng.randint(0, 4)
                n = 0
                async for _ in r.aiter_lines():
                    if n >= drop_after:
                        break
                    n += 1

    async def storm():
        await asyncio.gather(*(client(i) for i in range(200)))

    asyncio.run(storm())
    assert wait_until(lambda: ps(server.url)[SMOL]["slots_busy"] == 0 and ps(server.url)[SMOL]["queue"] == 0,
                      timeout=15)
    metrics = httpx.get(server.url + "/metrics").text
    assert f'corral_requests_running{{model="{SMOL}"}} 0.0' in metrics
    assert asyncio.run(stream_generate(server.url, SMOL, "Hi", greedy(3)))["final"]["eval_count"] == 3


def test_hostile_chat_template_renders_nothing_dangerous(start_server, model_store, tmp_path):
    marker = tmp_path / "pwned"
    payload = ("{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
               "{{ x()._module.__builtins__['__import__']('os').system('touch " + str(marker) + "') }}"
               "{% endif %}{% endfor %}")
    store = Store(model_store)
    evil = tmp_path / "evil.gguf"
    gguf_with_template(store.model_file(ModelName.parse(SMOL)), evil, payload)
    layer = store.add_blob_file(evil)
    name = ModelName.parse("evil:template")
    store.write_manifest(name, [Layer(MEDIA_MODEL, layer.digest, layer.size)])
    try:
        server = start_server()
        r = httpx.post(server.url + "/api/chat", json={"model": "evil:template", "stream": False,
                                                        "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        assert r.status_code == 400 and "template" in r.json()["error"]
        assert not marker.exists()
        assert httpx.get(server.url + "/").status_code == 200
    finally:
        store.delete(name)


def test_manifest_with_traversal_digest_is_rejected(start_server, model_store):
    store = Store(model_store)
    path = store.manifest_path(ModelName.parse("traversal:test"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "0" * 64,
                                                                "size": 1},
                                "layers": [{"mediaType": MEDIA_MODEL, "digest": "sha256:../../../etc/passwd",
                                            "size": 1}]}))
    try:
        server = start_server()
        r = httpx.post(server.url + "/api/generate", json={"model": "traversal:test", "prompt": "hi"}, timeout=30)
        assert r.status_code == 400 and "digest" in r.json()["error"]
        assert httpx.get(server.url + "/").status_code == 200
    finally:
        path.unlink()


@pytest.mark.parametrize("body", [
    b'{"model": "smollm2:135m", "prompt": "\xff\xfe bad utf-8"}',
    b'[1, 2, 3]',
    b'{"model": "smollm2:135m", "messages": [{"content": "no role"}]}',
    b'{"model": 5, "prompt": "x"}',
])
def test_more_bad_bodies_are_400(server, body):
    path = "/api/chat" if b"messages" in body else "/api/generate"
    r = httpx.post(server.url + path, content=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_sigterm_drains_then_stops_runners(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="2")
    warm(server.url, SMOL)
    runner_pid = ps(server.url)[SMOL]["pid"]

    async def late_request() -> int:
        try:
            return (await stream_generate(server.url, SMOL, "Hi", greedy(3)))["status"]
        except httpx.ConnectError:
            return 0  # the listening socket is already closed: refused, as it should be

    async def scenario():
        streams = [asyncio.create_task(stream_generate(server.url, SMOL, LONG, greedy(60))) for _ in range(2)]
        await asyncio.sleep(0.4)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        late = await late_request()
        return await asyncio.gather(*streams), late

    (a, b), late = asyncio.run(scenario())
    assert a["final"]["eval_count"] == 60 and b["final"]["eval_count"] == 60  # drained, not cut off
    assert not a["error"] and not b["error"]
    assert late in (0, 503)
    server.proc.wait(30)
    assert server.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert not psutil.pid_exists(runner_pid) or psutil.Process(runner_pid).status() == psutil.STATUS_ZOMBIE


def test_binds_loopback_by_default(server):
    pid = server.proc.pid
    listening = [c for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_cors_allows_localhost_and_configured_origins_only(start_server):
    server = start_server(OLLAMA_ORIGINS="https://app.example.com")
    def acao(origin: str) -> str | None:
        r = httpx.options(server.url + "/api/generate",
                          headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        return r.headers.get("access-control-allow-origin")
    assert acao("http://localhost:3000") == "http://localhost:3000"
    assert acao("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert acao("https://app.example.com") == "https://app.example.com"
    assert acao("https://evil.example") is None


def test_api_key(start_server):
    server = start_server(CORRAL_API_KEY="s3cret")
    assert httpx.get(server.url + "/").status_code == 200
    r = httpx.get(server.url + "/api/tags")
    assert r.status_code == 401 and r.json()["error"]
    assert httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["models"]
    import ollama
    assert ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"}).list().models
