"""One request through an ASGI app in-process, its reply streamed out as it is sent.

A cluster node runs corral's whole app and is handed the raw request; this is the server side
uvicorn would be. Unlike httpx's ASGITransport (which buffers the whole reply), every
`http.response.body` comes out as soon as the app sends it, and a consumer that stops reading is
a client that left: the app's receive() says `http.disconnect`, so corral cancels the request and
frees its slot exactly as for a dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Scope

from corral.api.app import error_response
from corral.cluster.messages import Body, Head, Part, ProxyRequest

log = logging.getLogger("corral.cluster")

# Parts waiting for a slow consumer before the app's send() waits (uvicorn's flow control).
QUEUE_PARTS = 64
# How long an app has, once its consumer left, to end by itself (a streaming reply sees the
# disconnect and returns at once) before it is cancelled (a reply that does not listen for one).
GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class _Ended:
    """The app returned (error None) or failed after its reply had started."""

    error: BaseException | None = None


def http_scope(request: ProxyRequest, server: tuple[str, int]) -> Scope:
    """The http scope uvicorn builds for this request (ASGI spec 2.3, as uvicorn announces)."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "server": server, "client": (request.client, 0), "scheme": "http", "method": request.method,
        "root_path": "", "path": request.path, "raw_path": request.path.encode("utf-8"),
        "query_string": request.query, "headers": [(k.lower(), v) for k, v in request.headers], "state": {},
    }


async def call_app(app: ASGIApp, request: ProxyRequest, *,
                   server: tuple[str, int] = ("127.0.0.1", 11434)) -> AsyncGenerator[Part, None]:
    """The reply to `request`: its Head, then its Body pieces as the app sends them. An app that
    fails before starting a reply gives corral's JSON 500; one that fails after, an exception
    here once the pieces sent before it are out (the ingress then cuts the connection, as
    uvicorn does). Closing this iterator early disconnects the request."""
    scope = http_scope(request, server)
    queue: asyncio.Queue[Part | _Ended] = asyncio.Queue(QUEUE_PARTS)
    gone = asyncio.Event()
    started = complete = body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given and not gone.is_set():
            body_given = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()  # a streaming reply's disconnect listener waits here
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal started, complete
        if gone.is_set():
            return  # as uvicorn: what an app sends after the client left goes nowhere
        if message["type"] == "http.response.start":
            if started:
                raise RuntimeError("http.response.start sent twice")
            started = True
            await queue.put(Head(int(message["status"]), _headers(message.get("headers", ()))))
        elif message["type"] == "http.response.body":
            if not started or complete:
                raise RuntimeError("http.response.body outside a reply")
            complete = not message.get("more_body", False)
            await queue.put(Body(bytes(message.get("body", b"")), not complete))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            log.error("exception in the app on %s %s", request.method, request.path, exc_info=exc)
            if not started:
                await error_response(500, f"internal error: {type(exc).__name__}: {exc}", request.path)(
                    scope, receive, send)
            elif not complete:
                await queue.put(_Ended(exc))
                return
            # else: a reply was sent whole (corral's 500 handler answers, then re-raises)
        if not started and not gone.is_set():
            await error_response(500, "internal error: the app returned without a reply", request.path)(
                scope, receive, send)
        elif not complete and not gone.is_set():
            await queue.put(_Ended(RuntimeError("the app returned before its reply was complete")))
            return
        await queue.put(_Ended())

    task = asyncio.create_task(run(), name=f"corral-asgi {request.method} {request.path}")
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Ended):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        gone.set()
        while not queue.empty():  # a send() waiting on a full queue goes on, and sees `gone`
            queue.get_nowait()
        await _finish(task)


async def _finish(task: asyncio.Task[None]) -> None:
    """Let the app end on its own after the disconnect, then cancel what is still running."""
    try:
        await asyncio.wait({task}, timeout=GRACE_S)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _headers(raw: Any) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((bytes(k), bytes(v)) for k, v in raw)
