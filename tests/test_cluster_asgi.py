"""cluster/asgi_call.py: corral's app driven in-process, its replies streamed piece by piece.

The pure tests use tiny ASGI apps; the live one runs corral's own app (create_app) on the real
smollm2 model, in this process, with its lifespan."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from conftest import NO_REGISTRY, SMOL

from corral.api.app import create_app
from corral.cluster import asgi_call
from corral.cluster.asgi_call import call_app
from corral.cluster.messages import Body, Head, Part, ProxyRequest
from corral.cluster.mux import Mux
from corral.cluster.ranking import ModelLoad, NodeStats, rank
from corral.config import Settings, parse_mirrors

JSON = ((b"content-type", b"application/json"),)


def post(path: str, body: dict, headers: tuple[tuple[bytes, bytes], ...] = JSON) -> ProxyRequest:
    return ProxyRequest("POST", path, b"", headers, json.dumps(body).encode())


async def collect(parts: AsyncIterator[Part]) -> list[Part]:
    return [part async for part in parts]


def ndjson(parts: list[Part]) -> list[dict]:
    data = b"".join(p.data for p in parts if isinstance(p, Body))
    return [json.loads(line) for line in data.splitlines() if line]


# -- pure: small ASGI apps ----------------------------------------------------------------------

async def echo_scope(scope, receive, send):
    message = await receive()
    reply = json.dumps({k: scope[k] for k in ("method", "path", "root_path", "http_version", "scheme")} |
                       {"query": scope["query_string"].decode(), "headers": [[k.decode(), v.decode()]
                                                                            for k, v in scope["headers"]],
                        "client": list(scope["client"]), "server": list(scope["server"]),
                        "body": message["body"].decode(), "more": message["more_body"]}).encode()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": reply})


def test_the_scope_is_uvicorns_and_the_body_arrives_whole():
    request = ProxyRequest("POST", "/api/chat", b"a=1&b=2", ((b"X-Corral-Priority", b"batch"),), b'{"x": 1}',
                           "10.1.2.3")
    head, body = asyncio.run(collect(call_app(echo_scope, request, server=("127.0.0.1", 7777))))
    assert head == Head(201, ((b"x-a", b"1"),)) and isinstance(body, Body) and body.more is False
    seen = json.loads(body.data)
    assert seen == {"method": "POST", "path": "/api/chat", "root_path": "", "http_version": "1.1",
                    "scheme": "http", "query": "a=1&b=2", "headers": [["x-corral-priority", "batch"]],
                    "client": ["10.1.2.3", 0], "server": ["127.0.0.1", 7777], "body": '{"x": 1}', "more": False}


def test_an_app_failing_before_its_reply_gives_corrals_json_500_in_the_paths_shape():
    async def broken(scope, receive, send):
        raise ValueError("boom")

    for path, shape in (("/api/chat", {"error": "internal error: ValueError: boom"}),
                        ("/v1/chat/completions", None)):
        head, body = asyncio.run(collect(call_app(broken, post(path, {}))))
        assert isinstance(head, Head) and head.status == 500 and head.header("content-type") == b"application/json"
        assert isinstance(body, Body) and not body.more
        error = json.loads(body.data)
        if shape is not None:
            assert error == shape
        else:  # OpenAI's error object under /v1
            assert error["error"]["message"] == "internal error: ValueError: boom", error


def test_an_app_failing_mid_reply_raises_after_what_it_sent():
    async def half(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        raise RuntimeError("runner gone")

    async def scenario() -> list[Part]:
        got: list[Part] = []
        with pytest.raises(RuntimeError, match="runner gone"):
            async for part in call_app(half, post("/api/chat", {})):
                got.append(part)
        return got

    assert asyncio.run(scenario()) == [Head(200, ()), Body(b"one\n", True)]


def test_a_consumer_that_stops_is_a_disconnect_and_an_app_that_ignores_it_is_cancelled(monkeypatch):
    monkeypatch.setattr(asgi_call, "GRACE_S", 0.2)
    seen: list[str] = []

    async def listens(scope, receive, send):  # a streaming reply: stops when told the client left
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append((await receive())["type"])

    async def deaf(scope, receive, send):  # never listens: cancelled after the grace
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def first_two(app) -> list[Part]:
        parts = call_app(app, post("/api/chat", {}))
        try:
            return [await anext(parts), await anext(parts)]
        finally:
            await parts.aclose()

    assert asyncio.run(first_two(listens)) == [Head(200, ()), Body(b"first", True)]
    assert asyncio.run(first_two(deaf)) == [Head(200, ()), Body(b"x", True)]
    assert seen == ["http.disconnect", "cancelled"]


def test_a_slow_consumer_holds_the_app_back_instead_of_buffering_without_bound():
    sent = 0

    async def fast(scope, receive, send):
        nonlocal sent
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(1000):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> int:
        parts = call_app(fast, post("/api/chat", {}))
        await anext(parts)
        for _ in range(20):
            await asyncio.sleep(0)
        held = sent
        rest = await collect(parts)
        assert len(rest) == 1001 and rest[-1] == Body(b"", False)
        return held

    assert asyncio.run(scenario()) <= asgi_call.QUEUE_PARTS + 1


# -- live: corral's app in-process on the real model --------------------------------------------

def busy(app) -> int:
    snap = app.state.corral.scheduler.snapshot()
    return sum(r.slots_busy for r in snap.runners) + sum(m.waiting for m in snap.models.values())


async def until_idle(app, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if busy(app) == 0:
            return True
        await asyncio.sleep(0.05)
    return busy(app) == 0


def test_corrals_app_streams_decides_errors_and_frees_slots_in_process(model_store, tmp_path):
    # Stream interval 0: every token its own part, so the parts counted below are the tokens.
    settings = Settings(models_dir=model_store, context_length=2048, num_parallel=2, num_threads=2,
                        cache_dir=tmp_path, registry_mirrors=parse_mirrors(NO_REGISTRY), stream_interval=0.0)
    app = create_app(settings)
    greedy = {"temperature": 0, "seed": 1}

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            # A streamed chat comes out token by token: many Body pieces before the last.
            parts = await collect(call_app(app, post("/api/chat", {
                "model": SMOL, "messages": [{"role": "user", "content": "Count from 1 to 20."}],
                "options": {**greedy, "num_predict": 30}})))
            head, bodies = parts[0], parts[1:]
            assert isinstance(head, Head) and head.status == 200
            assert head.header("content-type") == b"application/x-ndjson"
            assert all(isinstance(b, Body) for b in bodies) and bodies[-1].more is False  # type: ignore[union-attr]
            lines = ndjson(parts)
            assert lines[-1]["done"] is True and lines[-1]["eval_count"] > 5
            assert len([b for b in bodies if isinstance(b, Body) and b.more and b.data]) >= lines[-1]["eval_count"] // 2

            # Errors are decided on the node: status and body exactly as corral answers them.
            head, body = await collect(call_app(app, post("/api/chat", {"model": "nope:1", "messages": []})))
            assert isinstance(head, Head) and head.status == 404 and isinstance(body, Body) and not body.more
            assert json.loads(body.data) == {"error": "model 'nope:1' not found"}
            head, body = await collect(call_app(app, post("/v1/chat/completions", {"model": "nope:1", "messages": [
                {"role": "user", "content": "hi"}]})))
            assert isinstance(head, Head) and head.status == 404
            assert json.loads(body.data)["error"]["type"] == "not_found_error"  # type: ignore[union-attr]
            head, body = await collect(call_app(app, post("/api/chat", {"model": SMOL}, JSON + (
                (b"origin", b"http://evil.example"),))))
            assert isinstance(head, Head) and head.status == 403

            # A GET with no body, and its query: the node's /api/ps shows the model it just ran.
            head, body = await collect(call_app(app, ProxyRequest("GET", "/api/ps", b"", (), b"")))
            assert isinstance(head, Head) and head.status == 200
            assert [m["name"] for m in json.loads(body.data)["models"]] == [SMOL]  # type: ignore[union-attr]
            # ... and the routing stats read from its real snapshot and store rank it first for the model.
            ctx = app.state.corral
            stats = NodeStats.of("here", ctx.scheduler.snapshot(), [m.name.short for m in ctx.store.list()])
            assert stats.loaded == {SMOL: ModelLoad(2, 0, 0)} and {SMOL, "gemma3:270m"} <= stats.stored
            assert 0 < stats.free_memory < ctx.scheduler.snapshot().budget
            assert NodeStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
            elsewhere = NodeStats("elsewhere", {}, stats.stored, 2**40, 0, 0)
            assert rank("SmolLM2:135M", [elsewhere, stats]) == [["here"], ["elsewhere"]]
            assert rank("gemma3:270m", [elsewhere, stats]) == [["elsewhere", "here"]]  # the most free memory

            # A consumer that leaves after the first token frees the slot: a count that would
            # go on for thousands of tokens.
            stream = call_app(app, post("/api/generate", {"model": SMOL, "prompt": "1, 2, 3, 4, 5, 6,", "raw": True,
                                                          "options": {**greedy, "num_predict": 4000}}))
            async for part in stream:
                if isinstance(part, Body) and b'"response"' in part.data:
                    break
            assert busy(app) == 1
            await stream.aclose()
            assert await until_idle(app), app.state.corral.scheduler.snapshot()

            # The node's path (cluster/mux.py): the stream runs in its ingress's outbox; its
            # ingress cancelling it after the first tokens frees the slot too.
            outbox = Mux().outbox("ingress", 0.0)
            first = await outbox.start("s1", call_app(app, post("/api/generate", {
                "model": SMOL, "prompt": "1, 2, 3, 4, 5, 6,", "raw": True, "options": {**greedy, "num_predict": 4000}})))
            assert isinstance(first[0], Head) and first[0].status == 200
            pump = outbox.pump()
            message = await anext(pump)
            assert list(message) == ["s1"] and any(b'"response"' in p.data for p in message["s1"] if isinstance(p, Body))
            assert busy(app) == 1 and outbox.cancel("s1")
            assert await until_idle(app), app.state.corral.scheduler.snapshot()
            await pump.aclose()

            # A non-streaming request whose caller is cancelled (Ray cancels the call) frees it too.
            async def wait_whole() -> list[Part]:
                return await collect(call_app(app, post("/api/generate", {
                    "model": SMOL, "prompt": "1, 2, 3, 4, 5, 6,", "raw": True, "stream": False,
                    "options": {**greedy, "num_predict": 4000}})))
            caller = asyncio.create_task(wait_whole())
            for _ in range(200):
                if busy(app):
                    break
                await asyncio.sleep(0.05)
            assert busy(app) == 1
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert await until_idle(app), app.state.corral.scheduler.snapshot()

            # The app still serves after both.
            head, body = await collect(call_app(app, post("/api/generate", {
                "model": SMOL, "prompt": "Hi", "stream": False, "options": {**greedy, "num_predict": 3}})))
            assert isinstance(head, Head) and head.status == 200 and json.loads(body.data)["done"] is True  # type: ignore[union-attr]

    asyncio.run(scenario())
