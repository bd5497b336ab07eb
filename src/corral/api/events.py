"""GET /api/events: the live view as Server-Sent Events (the page at /ui and `corral top` read it).

Each scheduler event (scheduler/bus.py) goes out as `event: <kind>` with its fields as JSON, and
once a second an `event: snapshot`: runners with their memory and slots, the queue, tenants,
pools, the tokens generated so far and this stream's dropped-event count. A viewer that reads
slowly drops events (its queue is bounded); it never slows the scheduler. One snapshot a second
is built and shared by every stream, so viewers cost the scheduler nothing per viewer. Streams
end when the server starts to stop, so an open page never holds up a shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from corral.api.models import details
from corral.scheduler.bus import BusEvent, Subscription
from corral.scheduler.scheduler import Scheduler
from corral.scheduler.snapshot import RunnerView, Snapshot

router = APIRouter()

SNAPSHOT_EVERY = 1.0  # seconds


def frame(kind: str, data: dict) -> bytes:
    return _frame(kind, json.dumps(data, separators=(",", ":")))


def _frame(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


def event_data(event: BusEvent) -> dict:
    return {"kind": event.kind, **dataclasses.asdict(event)}


def _runner(r: RunnerView) -> dict:
    view = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "info"}
    return {**view, "details": details(r.info)}


def snapshot_data(snap: Snapshot, tokens: int) -> dict:
    """The snapshot as JSON values; per pool, its budget and what loaded models reserve in it."""
    pools = {name: {"budget": budget, "reserved": sum(r.size for r in snap.runners if r.device == name),
                    "measured": sum(r.size_measured for r in snap.runners if r.device == name)}
             for name, budget in snap.pools.items()}
    return {"time": time.time(), "runners": [_runner(r) for r in snap.runners],
            "models": {k: dataclasses.asdict(v) for k, v in snap.models.items()},
            "tenants": {k: dataclasses.asdict(v) for k, v in snap.tenants.items()},
            "queue": [dataclasses.asdict(q) for q in snap.queue], "pools": pools,
            "budget": snap.budget, "reserved": snap.reserved, "tokens_total": tokens}


class Snapshots:
    """The latest snapshot, rebuilt at most once per period whoever asks."""

    def __init__(self, scheduler: Scheduler, period: float = SNAPSHOT_EVERY) -> None:
        self.scheduler, self.period = scheduler, period
        self._at = -period
        self._json = "{}"

    def frame(self, dropped: int) -> bytes:
        """The latest snapshot as an SSE frame with this stream's dropped count: serialized once
        per period, not once per viewer."""
        now = time.monotonic()
        if now - self._at >= self.period * 0.9:
            data = snapshot_data(self.scheduler.snapshot(), self.scheduler.bus.tokens)
            self._json = json.dumps(data, separators=(",", ":"))
            self._at = now
        return _frame("snapshot", f'{self._json[:-1]},"dropped":{dropped}}}')


def _snapshots(request: Request) -> Snapshots:
    state = request.app.state
    if getattr(state, "snapshots", None) is None:
        state.snapshots = Snapshots(state.corral.scheduler)
    return state.snapshots


async def _stream(sub: Subscription, snapshots: Snapshots) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    due = loop.time()
    getter: asyncio.Future[BusEvent] | None = None
    try:
        while not snapshots.scheduler.bus.closed:  # a stopping server ends its streams
            if loop.time() >= due:  # also while events flood in
                yield snapshots.frame(sub.dropped)
                due = max(due + SNAPSHOT_EVERY, loop.time())
            # One get() lives until it has an event: cancelling a get() at a timeout (wait_for)
            # can lose the event it was just handed.
            getter = getter or asyncio.ensure_future(sub.get())
            done, _ = await asyncio.wait({getter}, timeout=max(due - loop.time(), 0))
            if done:
                event, getter = getter.result(), None
                yield frame(event.kind, event_data(event))
    finally:
        if getter is not None:
            getter.cancel()
        snapshots.scheduler.bus.unsubscribe(sub)


# Not in the OpenAPI schema: an endless stream (a schema-driven client or fuzzer would wait forever).
@router.get("/api/events", include_in_schema=False)
async def events(request: Request) -> StreamingResponse:
    snapshots = _snapshots(request)
    sub = snapshots.scheduler.bus.subscribe()
    # no-cache and no buffering: a proxy in front must pass each event on as it comes
    return StreamingResponse(_stream(sub, snapshots), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
