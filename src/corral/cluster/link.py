"""The ingress's side of the multiplexed hop (cluster/mux.py): one Link per node replica.

A link reads that replica's pump (one Ray stream, targeted at the node through the router's
`target`) and hands each stream its items; a client that leaves is a `cancel` call (this ingress
says it is alive in the directory, not here: directory.py). A pump that fails (the
node died, or a replica that is not the one asked for refused it) fails every stream on it with
that RayError, which forward.py handles as before: resend, or an error line."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ray.exceptions import RayError

from corral.cluster.mux import Inbox, Streams

log = logging.getLogger("corral.cluster")

# This process's replies open on each node, live: the router's tie-break within a tier (router.py).
OPEN: Counter[str] = Counter()


class NodeGone(RayError):
    """The link closed with streams on it for another reason than a RayError (the ingress closes)."""


class Link:
    def __init__(self, handle: Any, ingress: str, node: str, instance: str, streams: Streams,
                 on_close: Callable[[Link], None]) -> None:
        self.node, self.instance, self.ingress = node, instance, ingress
        self.messages = 0  # pump messages read (each carries every stream's items of a step)
        self.failed: BaseException | None = None
        self._pump = handle.options(stream=True, method_name="pump")
        self._cancel = handle.options(method_name="cancel")
        self._streams, self._on_close = streams, on_close
        self._ids: dict[str, Inbox] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read(), name=f"corral-link {node}")

    def attach(self, inbox: Inbox) -> None:
        """A stream the node started: its items come by this link (or its failure, at once, when
        the link is already closed)."""
        if self.failed is not None:
            inbox.fail(self.failed)
            return
        self._ids[inbox.stream] = inbox
        OPEN[self.node] += 1
        inbox.link = self

    def _drop(self, stream: str) -> bool:
        if self._ids.pop(stream, None) is None:
            return False
        OPEN[self.node] -= 1
        return True

    def cancel(self, inbox: Inbox) -> None:
        """The client left before its reply ended: the node cancels the request (frees its slot)."""
        if self._drop(inbox.stream) and self.failed is None:
            call = asyncio.create_task(self._cancel_on_node(inbox.stream))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _read(self) -> None:
        error: BaseException = NodeGone(f"corral node {self.node}: the link closed")
        pump = None
        try:
            while True:
                pump = self._pump.remote(ingress=self.ingress, instance=self.instance, target=self.node)
                async for message in pump:
                    self.messages += 1
                    for stream in self._streams.dispatch(message):
                        self._drop(stream)
                pump = None
                if not self._ids:
                    return  # the node ended an idle pump; the next stream opens a new link
                # a stream started as the node ended its idle pump: a new pump carries it
        except RayError as exc:
            error = exc
            log.warning("the link to node %s failed (%s), %d streams on it", self.node, type(exc).__name__,
                        len(self._ids))
        finally:
            if pump is not None:
                pump.cancel()  # this ingress closes (the node cancels its streams) or the pump failed
            self.failed = error
            for stream, inbox in list(self._ids.items()):
                inbox.fail(error)
                self._drop(stream)
            self._on_close(self)

    async def _cancel_on_node(self, stream: str) -> None:
        try:
            await self._cancel.remote(ingress=self.ingress, stream=stream, target=self.node)
        except RayError as exc:  # the pump tells a dead node; this call's outcome changes nothing
            log.debug("cancel on node %s failed: %s", self.node, exc)
