"""Forwarding one request to a node over a Ray DeploymentHandle, with corral's admission kept exact.

A node that answers "busy" (503) is excluded and the next node is tried, so the client gets a 503
only when every node was full. A node that dies before its reply produced any output (a request
still queued there, or a non-streamed one) is left out and the request is sent again; a node that
dies mid-stream ends the client's stream with an error line. Errors decided on a node (404, 400,
507, ...) pass through unchanged: the ingress never rewrites a node's status or body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ray.exceptions import RayError

from corral.cluster import directory
from corral.cluster.link import Link
from corral.cluster.messages import Body, End, Head, Part, ProxyRequest, Started
from corral.cluster.mux import Inbox, StreamFailed, Streams
from corral.cluster.node import NODE_HEADER
from corral.errors import CorralError

log = logging.getLogger("corral.cluster")

RESEND_PAUSE_S = 0.5  # lets Serve notice a dead replica before a request is sent again
# A stream lost on the way: its node died (the pump's RayError), or its app failed mid-reply.
LOST = (RayError, StreamFailed)


class NoNodes(CorralError):
    status = 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


@dataclass
class Opened:
    """A node's reply once its first items arrived: the head, the parts that came with it, the rest."""

    head: Head
    parts: list[Part]
    rest: Inbox  # every body part (the first ones included) as it comes
    node: str
    streams: Streams

    def cancel(self) -> None:
        """Stop the node's side (a client that left frees its slot); nothing for a reply that ended."""
        self.streams.close(self.rest)
        if not self.rest.complete and self.rest.link is not None:
            self.rest.link.cancel(self.rest)
        self.rest.complete = True

    @property
    def content_type(self) -> bytes:
        return next((v for k, v in self.head.headers if k.lower() == b"content-type"), b"")


@dataclass
class Collected:
    """A node's whole reply (fan-outs read small replies whole)."""

    node: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    failed: str | None = field(default=None)  # an error line at the end of a streamed reply, or the body's error

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def header(head: Head, name: bytes) -> str:
    return next((v.decode() for k, v in head.headers if k.lower() == name), "")


def is_progress(data: bytes) -> bool:
    """Body bytes that are only queue notices (corral's `queue_position` lines): no output yet."""
    lines = [line for line in data.splitlines() if line.strip()]
    return bool(lines) and all(b'"queue_position"' in line and b'"done": false' in line for line in lines)


def error_line(content_type: bytes, message: str) -> bytes:
    """An error at the end of a stream that already started, in that stream's own format."""
    if b"event-stream" in content_type:
        return b"data: " + json.dumps({"error": {"message": message, "type": "api_error"}}).encode() + b"\n\n"
    return json.dumps({"error": message}).encode() + b"\n"


class Forwarder:
    """The ingress's side of the hop: `start` calls, and a Link per node replica carrying every
    stream's later parts (cluster/mux.py)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.start = handle.options(method_name="start")
        self.id = uuid.uuid4().hex  # this ingress process, to the nodes (its outbox there)
        self.streams = Streams()
        self.links: dict[tuple[str, str], Link] = {}
        self._closed_messages = 0
        self._alive: asyncio.Task[None] | None = None  # says so in the directory (started on first use)

    @property
    def hop_messages(self) -> int:
        """Pump messages read so far, every link's (corral_cluster_hop_messages_total)."""
        return self._closed_messages + sum(link.messages for link in self.links.values())

    def link(self, node: str, instance: str) -> Link:
        link = self.links.get((node, instance))
        if link is None:
            link = self.links[node, instance] = Link(self.handle, self.id, node, instance, self.streams, self._unlink)
        return link

    def _unlink(self, link: Link) -> None:
        if self.links.get((link.node, link.instance)) is link:
            del self.links[link.node, link.instance]
        self._closed_messages += link.messages

    async def _say_alive(self) -> None:
        """The nodes cancel the streams of an ingress that stops saying this (mux.LEASE_S)."""
        while True:
            try:
                await directory.ingress_alive(self.id)
            except RayError as exc:
                log.warning("the directory is unreachable: %s", exc)
            await asyncio.sleep(directory.INGRESS_EVERY_S)

    async def live_nodes(self) -> list[str]:
        return [stats["node"] for stats in await directory.nodes()]

    async def call(self, request: ProxyRequest, model: str | None = None, exclude: Collection[str] = (),
                   target: str | None = None) -> Opened:
        """One node's reply, up to its first items; RayError when the node died before it."""
        if self._alive is None:
            self._alive = asyncio.create_task(self._say_alive(), name="corral-ingress-alive")
        inbox = self.streams.open()  # before the call: a pump message can only be for a known stream
        try:
            started: Started = await self.start.remote(request, ingress=self.id, stream=inbox.stream, model=model,
                                                       exclude=tuple(exclude), target=target)
        except BaseException:
            self.streams.close(inbox)
            raise
        items = list(started.items)
        head = items.pop(0)
        assert isinstance(head, Head), head
        node = header(head, NODE_HEADER)
        inbox.put(items, first=True)
        if inbox.complete:
            self.streams.close(inbox)
        else:
            self.link(node, started.instance).attach(inbox)
        return Opened(head, [p for p in items if not isinstance(p, End)], inbox, node, self.streams)

    async def open(self, request: ProxyRequest, exclude: Collection[str] = ()) -> Opened:
        """The first node that takes the request, in the router's order; its 503 when all were busy."""
        model = request.model()
        exclude = list(exclude)
        live = await self.live_nodes()
        if not live:
            raise NoNodes("no corral node is available in the cluster")
        busy: Opened | None = None
        for _ in range(len(live) + 2):  # each node once, and a resend or two after a node died
            try:
                opened = await self.call(request, model, exclude)
            except RayError as exc:
                log.warning("a node failed before answering (%s); sending the request again", type(exc).__name__)
                await asyncio.sleep(RESEND_PAUSE_S)
                continue
            if busy is not None and opened.head.status == 404:
                # The router ranks the nodes that have the model first: a node without it (one that
                # joined later) after busy ones means every holder was full, a 503, not a 404.
                opened.cancel()
                return busy
            if opened.head.status != 503 or not opened.node:
                if busy is not None:
                    busy.cancel()
                return opened
            if busy is not None:
                busy.cancel()
            busy = opened
            exclude.append(opened.node)
            if set(live) <= set(exclude):
                break
        if busy is None:
            raise NoNodes("no corral node could take the request")
        return busy

    async def body(self, opened: Opened, request: ProxyRequest) -> AsyncIterator[bytes]:
        """The reply's bytes. A node dying before any output: the request goes to another node
        (its stream continues there); after output: an error line ends the stream."""
        output, tried = False, [opened.node]
        try:
            while True:
                try:
                    async for data in self.chunks(opened):
                        if data:
                            output = output or not is_progress(data)
                            yield data
                    return
                except LOST as exc:
                    message = f"corral node {opened.node} failed: {type(exc).__name__}"
                    log.warning("%s (output sent: %s)", message, output)
                    if output or len(tried) > 3:
                        yield error_line(opened.content_type, message)
                        return
                await asyncio.sleep(RESEND_PAUSE_S)
                try:
                    again = await self.open(request, exclude=tried)
                except CorralError as exc:
                    yield error_line(opened.content_type, str(exc))
                    return
                if again.head.status >= 300:  # the request cannot run elsewhere: say why, in the stream
                    text = b"".join(p.data for p in again.parts if isinstance(p, Body))
                    again.cancel()
                    yield error_line(opened.content_type, _message(text) or f"status {again.head.status}")
                    return
                opened = again
                tried.append(opened.node)
        finally:
            opened.cancel()  # a client that left: the node's side stops, and its slot frees

    async def collect(self, request: ProxyRequest, node: str) -> Collected:
        """One node's whole reply (targeted: fan-outs)."""
        return await self.read(await self.call(request, target=node))

    async def read(self, opened: Opened) -> Collected:
        """The rest of a reply, whole; `failed` says why when it is an error (a status, or an
        error line ending a streamed reply)."""
        body = b"".join([chunk async for chunk in self.chunks(opened)])
        failed = None
        if opened.head.status >= 300:
            failed = _message(body) or f"status {opened.head.status}"
        else:
            last = body.rstrip().rsplit(b"\n", 1)[-1]
            if last.startswith(b"{") and b'"error"' in last:
                failed = _message(last)
        return Collected(opened.node, opened.head.status, opened.head.headers, body, failed)

    async def chunks(self, opened: Opened) -> AsyncIterator[bytes]:
        """A reply's body bytes as they come, no resend (a targeted reply belongs to its node)."""
        try:
            async for batch in opened.rest:
                for part in batch:
                    if isinstance(part, Body):
                        yield part.data
        finally:
            opened.cancel()


def _message(body: bytes) -> str:
    """The error message of a corral JSON error body (Ollama's, OpenAI's or Anthropic's shape)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error) if error is not None else ""
