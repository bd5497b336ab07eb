"""The multiplexed hop: every stream between one ingress and one node shares ONE long-lived Ray
stream (the node's `pump`), so a runner step producing tokens for N requests costs one Ray
message, not N. Pure asyncio, no Ray: the node side (Outbox, Mux) and the ingress side (Inbox,
Streams).

A stream's first items (its Head, and whatever came with it) are the answer of a unary `start`
call; the rest wait in the outbox of the ingress that started it, keyed by a stream id that the
ingress chose and registered before calling, and each pump message carries everything queued for
that ingress since the last one. The ingress hands each stream's items to that stream's Inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from corral.cluster.messages import Body, End, Head, Item

# An outbox whose ingress attached no pump for this long (and starts nothing) is dropped and its
# streams cancelled: the ingress died between a `start` and its pump.
ATTACH_S = 5.0
# An ingress not heard of for this long while its pump is attached is gone: a caller that dies
# does not end a Ray stream on the replica's side, so each ingress says it is alive every few
# seconds (in the directory, directory.py) and the node cancels the streams of one that stopped.
LEASE_S = 10.0
# A pump with no stream left ends after this long, so that a replica that Serve stops (it waits
# for its requests in flight, pumps included) drains as soon as its streams ended.
IDLE_S = 2.0
LOST_S = 60.0  # how long a node remembers the streams it cancelled for a silent ingress
# Loop turns a pump lets pass once woken before it takes what is queued: the requests of one
# runner step wake one after another, and their tokens then leave in the same message.
SETTLE_TURNS = 3
# A pump sends at most one message per this many seconds (CORRAL_CLUSTER_INTERVAL): each Ray
# message wakes the node's core worker, raylet and the ingress's worker, and on a machine whose
# cores run llama.cpp each wake-up takes a core from it (docs/PERFORMANCE.md "The Ray hop"). A
# stream's first items never wait (they are `start`'s answer), nor does a message with an End.
PUMP_INTERVAL_S = 0.05

Message = dict[str, list[Item]]  # one pump message: stream id → its items since the last one


class StreamFailed(Exception):
    """The app failed after the reply started (an End with an error), as told by the node."""


class Outbox:
    """One ingress's streams on a node, and what they produced since the pump's last message.
    Each reply is read as the app sends it (call_app's own backpressure no longer holds an app
    back: one slow client must not hold the pump); what waits here between two messages is at
    most one step's worth while the pump keeps up, and at worst the replies' remaining bytes."""

    def __init__(self, ingress: str, now: float, interval: float = PUMP_INTERVAL_S) -> None:
        self.ingress = ingress
        self.interval = interval
        self.seen = now
        self.attached = False
        self.closed = False
        self.lost: list[str] = []  # the started streams that close() cancelled
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._first: dict[str, list[Item]] = {}  # streams whose first items `start` did not take yet
        self._ready: dict[str, asyncio.Future[None]] = {}  # ... and that have none yet
        self._pending: Message = {}
        self._wake = asyncio.Event()
        self._end = asyncio.Event()  # an End is queued (or the outbox closed): its message does not wait

    @property
    def streams(self) -> int:
        return len(self._tasks)

    def expired(self, now: float) -> bool:
        if self._first:  # a start is waiting for a reply's head (a non-streamed reply comes whole)
            return False
        return now - self.seen > (LEASE_S if self.attached else ATTACH_S)

    async def start(self, stream: str, parts: AsyncGenerator[Head | Body, None]) -> list[Item]:
        """Run a reply; its first items (at least its Head, or its End). A caller that is cancelled
        while waiting cancels the stream."""
        if self.closed or stream in self._tasks or stream in self._first:
            await parts.aclose()
            raise ValueError(f"stream {stream} cannot start here")
        ready = asyncio.get_running_loop().create_future()
        self._first[stream], self._ready[stream] = [], ready
        self._tasks[stream] = asyncio.create_task(self._run(stream, parts), name=f"corral-mux {stream}")
        try:
            await ready
        except BaseException:
            self.cancel(stream)
            self._first.pop(stream, None)
            raise
        return self._first.pop(stream)  # the first item, and whatever came after it meanwhile

    def cancel(self, stream: str) -> bool:
        """The ingress's client left: the reply is cancelled (its request and slot freed). False
        for a stream that is not running here (it ended already, or never was)."""
        self._pending.pop(stream, None)
        task = self._tasks.get(stream)
        if task is not None:
            task.cancel()
        return task is not None

    async def pump(self) -> AsyncGenerator[Message, None]:
        """Everything queued since the last message, one message each time something was; ends
        when the outbox closes or has had no stream for IDLE_S. Its consumer going away (the
        generator closed or cancelled) cancels every stream of this ingress."""
        if self.attached or self.closed:
            raise RuntimeError(f"ingress {self.ingress} already has a pump here")
        self.attached = True  # its lease counts from the pump call (Mux.outbox) or the last touch
        ended = False
        loop = asyncio.get_running_loop()
        sent = -self.interval  # when the last message went
        try:
            while not self.closed:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_S)
                except TimeoutError:
                    if not (self._tasks or self._first or self._pending):
                        ended = True
                        return
                    continue
                for _ in range(SETTLE_TURNS):
                    await asyncio.sleep(0)
                if (hold := sent + self.interval - loop.time()) > 0 and not self._end.is_set():
                    with contextlib.suppress(TimeoutError):  # what comes meanwhile joins this message
                        await asyncio.wait_for(self._end.wait(), hold)
                self._wake.clear()
                self._end.clear()
                message, self._pending = self._pending, {}
                if message:
                    yield message
                    sent = loop.time()
            # Closed under a live pump: its ingress was given up on (expired). An error, not an
            # end, so that its link fails the streams it still carries instead of pumping again.
            raise ConnectionError(f"node gave up on ingress {self.ingress}: its streams were cancelled")
        finally:
            self.attached = False
            if not ended:
                self.close()

    def close(self) -> None:
        """The ingress is gone: every stream is cancelled, a waiting start fails, the pump ends."""
        self.closed = True
        self.lost = [stream for stream in self._tasks if stream not in self._first]
        for stream in list(self._tasks):
            self.cancel(stream)
        for ready in self._ready.values():
            if not ready.done():
                ready.set_exception(ConnectionError(f"ingress {self.ingress} is gone"))
        self._ready.clear()
        self._pending.clear()
        self._wake.set()
        self._end.set()

    async def _run(self, stream: str, parts: AsyncGenerator[Head | Body, None]) -> None:
        try:
            async with contextlib.aclosing(parts):  # closing the reply is the client's disconnect
                async for part in parts:
                    self._put(stream, part)
            self._put(stream, End())
        except asyncio.CancelledError:
            pass  # cancelled by the ingress, or it is gone: nothing more goes out
        except Exception as exc:
            self._put(stream, End(f"{type(exc).__name__}: {exc}"))
        finally:
            self._tasks.pop(stream, None)
            ready = self._ready.pop(stream, None)
            if ready is not None and not ready.done():
                ready.set_exception(ConnectionError(f"stream {stream} was cancelled before its reply started"))

    def tell(self, stream: str, item: Item) -> None:
        """An item for the pump about a stream that does not run here (any more)."""
        self._pending.setdefault(stream, []).append(item)
        self._wake.set()
        if isinstance(item, End):
            self._end.set()

    def _put(self, stream: str, item: Item) -> None:
        first = self._first.get(stream)
        if first is not None:
            first.append(item)
            ready = self._ready.pop(stream, None)
            if ready is not None and not ready.done():
                ready.set_result(None)
            return
        if not self.closed:
            self.tell(stream, item)


class Mux:
    """A node's outboxes, one per ingress process."""

    def __init__(self, interval: float = PUMP_INTERVAL_S) -> None:
        self.interval = interval
        self._boxes: dict[str, Outbox] = {}
        # Streams cancelled with an outbox that closed, by ingress: an ingress that was only slow,
        # not gone, learns it from its next pump (an End with an error each) instead of waiting.
        self._lost: dict[str, tuple[float, list[str]]] = {}

    def outbox(self, ingress: str, now: float) -> Outbox:
        """The ingress's outbox (a new one where it had none, or where its last one closed)."""
        box = self._boxes.get(ingress)
        if box is None or box.closed:
            if box is not None:
                self._forget(box, now)
            box = self._boxes[ingress] = Outbox(ingress, now, self.interval)
            _, lost = self._lost.pop(ingress, (now, []))
            for stream in lost:
                box.tell(stream, End("the node gave up on this ingress (silent too long): the reply was cancelled"))
        box.seen = now
        return box

    def _forget(self, box: Outbox, now: float) -> None:
        del self._boxes[box.ingress]
        if box.lost:
            self._lost[box.ingress] = (now, box.lost)

    def get(self, ingress: str) -> Outbox | None:
        box = self._boxes.get(ingress)
        return box if box is not None and not box.closed else None

    def touch(self, ingress: str, now: float) -> bool:
        """The ingress is alive: the lease of its pumped outbox renews. Not an outbox with no pump:
        streams that no pump carries expire ATTACH_S after their start whatever the ingress does."""
        box = self.get(ingress)
        if box is not None and box.attached:
            box.seen = now
        return box is not None and box.attached

    def expire(self, now: float) -> list[str]:
        """Close the outboxes of the ingresses that went silent (their streams are cancelled) and
        forget those with nothing left; the ingresses whose streams were cancelled."""
        gone = []
        for ingress, box in list(self._boxes.items()):
            if box.closed or (box.expired(now) and not box.streams and not box.attached):
                self._forget(box, now)
            elif box.expired(now):
                box.close()
                self._forget(box, now)
                gone.append(ingress)
        self._lost = {i: (at, lost) for i, (at, lost) in self._lost.items() if now - at < LOST_S}
        return gone

    @property
    def streams(self) -> int:
        return sum(box.streams for box in self._boxes.values())

    @property
    def attached(self) -> bool:
        """Some ingress's pump is attached here: its lease needs renewing from the directory."""
        return any(box.attached and not box.closed for box in self._boxes.values())


class Inbox:
    """One stream at the ingress. Its queue is not bounded here: the link must never wait on a
    slow client (the other streams of the node would wait with it). What bounds it is the reply
    itself (a generation is capped by num_predict and the context): a slow client holds at most
    its own reply's remaining bytes here, as a slow reader of one Ray stream did before."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.complete = False  # its End (or its failure) arrived: the node has nothing left of it
        self.link: Any = None  # the link its items come by, once it started (link.Link)
        self._queue: deque[list[Item] | BaseException] = deque()
        self._more = asyncio.Event()

    def put(self, items: list[Item], first: bool = False) -> None:
        """Items from the node; `first` (start's answer) goes before any pump message that
        overtook it (the two come by different Ray calls)."""
        self.complete = self.complete or any(isinstance(item, End) for item in items)
        self._queue.appendleft(items) if first else self._queue.append(items)
        self._more.set()

    def fail(self, error: BaseException) -> None:
        self.complete = True
        self._queue.append(error)
        self._more.set()

    def __aiter__(self) -> AsyncIterator[list[Head | Body]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Head | Body]]:
        """The reply's items a batch at a time, until its End; the error that ended it, raised."""
        while True:
            while not self._queue:
                self._more.clear()
                await self._more.wait()
            got = self._queue.popleft()
            if isinstance(got, BaseException):
                raise got
            parts = [item for item in got if not isinstance(item, End)]
            end = next((item for item in got if isinstance(item, End)), None)
            if parts:
                yield parts
            if end is not None:
                if end.error is not None:
                    raise StreamFailed(end.error)
                return


class Streams:
    """The ingress's open streams by id (every node's): a link hands each pump message out here."""

    def __init__(self) -> None:
        self._open: dict[str, Inbox] = {}
        self.dropped = 0  # items for a stream that is closed here (its cancel was still on the way)

    def open(self) -> Inbox:
        inbox = Inbox(uuid.uuid4().hex)
        self._open[inbox.stream] = inbox
        return inbox

    def close(self, inbox: Inbox) -> None:
        self._open.pop(inbox.stream, None)

    def dispatch(self, message: Message) -> list[str]:
        """Each stream's items to its inbox; the streams that ended (nothing more comes for them)."""
        ended = []
        for stream, items in message.items():
            inbox = self._open.get(stream)
            if inbox is None:
                self.dropped += 1
                continue
            inbox.put(items)
            if inbox.complete:
                self.close(inbox)
                ended.append(stream)
        return ended

    def __len__(self) -> int:
        return len(self._open)
