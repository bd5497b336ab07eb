"""TEMPORARY stand-in for branch `parts`' asgi_call.py (dropped at the merge)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message

from corral.cluster.messages import Body, Head, Part, ProxyRequest


async def call_app(app: ASGIApp, request: ProxyRequest) -> AsyncIterator[Part]:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": "http", "path": request.path, "raw_path": request.path.encode(),
        "query_string": request.query, "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.headers],
        "client": (request.client, 0), "server": ("127.0.0.1", 11434)}
    out: asyncio.Queue[Part | None] = asyncio.Queue()
    gone = asyncio.Event()
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            await out.put(Head(message["status"], tuple((k, v) for k, v in message.get("headers", []))))
        elif message["type"] == "http.response.body":
            await out.put(Body(message.get("body", b""), message.get("more_body", False)))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            await out.put(Head(500, ((b"content-type", b"application/json"),)))
            await out.put(Body(json.dumps({"error": f"internal error: {exc}"}).encode(), False))
        finally:
            await out.put(None)

    task = asyncio.create_task(run())
    try:
        while (part := await out.get()) is not None:
            yield part
            if isinstance(part, Body) and not part.more:
                break
    finally:
        gone.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 5)
        task.cancel()


async def batched(parts: AsyncIterator[Part]) -> AsyncIterator[list[Part]]:
    queue: asyncio.Queue[Part | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for part in parts:
                await queue.put(part)
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            ended = False
            while not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    ended = True
                    break
                batch.append(nxt)
            yield batch
            if ended:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        aclose = getattr(parts, "aclose", None)
        if aclose is not None:
            await aclose()
