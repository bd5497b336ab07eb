"""The live view's publish/subscribe hub: what the scheduler does, as it does it.

The scheduler publishes small typed events (a request admitted, queued, started, finished or
refused; a model loading, loaded, unloaded with its reason, crashed). Each subscriber (an SSE
stream, `corral top`) has its own bounded queue filled with `put_nowait`: a viewer that reads
slowly loses events (counted in `dropped`), and publishing never waits, so no viewer can slow
the scheduler. The last events are kept so a new viewer starts with some history.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, TypedDict

from corral.scheduler.events import Done, Event, Failed, Text
from corral.scheduler.state import Waiter

SUBSCRIBER_QUEUE = 1024  # events a subscriber may fall behind by before it drops
HISTORY = 200  # events a new subscriber is first given


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEvent:
    """A request's step. `tenant` and `lane` come from its ticket (api keys, X-Corral-Priority)."""

    kind: ClassVar[str]
    model: str
    tenant: str
    lane: str
    ts: float = field(default_factory=_now)  # wall clock


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAdmitted(RequestEvent):
    kind = "request_admitted"
    position: int  # 1-based place among its model's waiters; 0: it takes a slot at once


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStarted(RequestEvent):
    kind = "request_started"
    queue_s: float  # admission to slot, a load included


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFinished(RequestEvent):
    kind = "request_finished"
    status: int  # 200, the failure's HTTP status, or 499 when the client left first
    reason: str  # Ollama's done_reason, "error", or "cancel"
    prompt_tokens: int = 0
    tokens: int = 0
    latency_s: float = 0.0  # admission to the end
    ttft_s: float | None = None  # admission to the first token
    itl_s: float | None = None  # mean gap between tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRefused(RequestEvent):
    kind = "request_refused"
    status: int  # 503 (queue full, stopping), 429 (tenant limit), 504 (deadline), ...
    message: str


class UnloadReason(StrEnum):
    EVICTED = "evicted"  # idle, and its memory was needed for another model
    EXPIRED = "expired"  # its keep_alive ran out
    REQUESTED = "requested"  # keep_alive 0, `corral stop`
    RELOAD = "reload"  # a request needs other load options (num_ctx, num_gpu, num_thread)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEvent:
    kind: ClassVar[str]
    model: str
    device: str  # "cpu" or "gpuN"
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoading(ModelEvent):
    kind = "model_loading"
    estimate: int  # bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoaded(ModelEvent):
    kind = "model_loaded"
    load_s: float
    measured: int  # the runner's resident bytes once loaded


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelUnloaded(ModelEvent):
    kind = "model_unloaded"
    reason: UnloadReason
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCrashed(ModelEvent):
    kind = "model_crashed"
    reason: str  # "crash" (the process died) | "stall" (the watchdog killed it) | "load" (it never came up)
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PullProgress:
    kind = "pull_progress"
    model: str
    status: str
    completed: int = 0
    total: int = 0
    ts: float = field(default_factory=_now)


BusEvent = (RequestAdmitted | RequestStarted | RequestFinished | RequestRefused | ModelLoading | ModelLoaded
            | ModelUnloaded | ModelCrashed | PullProgress)


class About(TypedDict):
    model: str
    tenant: str
    lane: str


def about(waiter: Waiter) -> About:
    """The fields every request event carries, from a waiter."""
    return {"model": waiter.model, "tenant": waiter.ticket.tenant.name, "lane": waiter.ticket.lane.value}


class Subscription:
    """One viewer's bounded queue."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[BusEvent] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: BusEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> BusEvent:
        return await self.queue.get()


class Bus:
    def __init__(self, queue_size: int = SUBSCRIBER_QUEUE, history: int = HISTORY) -> None:
        self.queue_size = queue_size
        self.subscribers: set[Subscription] = set()
        self.history: deque[BusEvent] = deque(maxlen=history)
        self.tokens = 0  # generated, all requests: viewers difference it into tokens/s
        self.closed = False  # the server is stopping: streams end (within a second), not hold it up

    def trace(self, waiter: Waiter) -> RequestTrace:
        return RequestTrace(waiter, self)

    def publish(self, event: BusEvent) -> None:
        self.history.append(event)
        for sub in self.subscribers:
            sub.offer(event)

    def subscribe(self) -> Subscription:
        """A new subscription, already holding the recent history."""
        sub = Subscription(self.queue_size)
        for event in self.history:
            sub.offer(event)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)


class RequestTrace:
    """Follows one request's events to publish how it ended: tokens, latency, TTFT, mean ITL."""

    def __init__(self, waiter: Waiter, bus: Bus) -> None:
        self.waiter, self.bus = waiter, bus
        self.first = self.last = 0.0
        self.texts = 0
        self.end: Done | Failed | None = None

    def saw(self, event: Event) -> None:
        if isinstance(event, Text):
            self.bus.tokens += 1
            self.texts += 1
            self.last = time.monotonic()
            self.first = self.first or self.last
        elif isinstance(event, (Done, Failed)):
            self.end = event
            if isinstance(event, Done):  # a Text can hold more than one token (held-back UTF-8, stops)
                self.bus.tokens += max(event.eval_count - self.texts, 0)

    def finished(self) -> RequestFinished:
        w, end, now = self.waiter, self.end, time.monotonic()
        if isinstance(end, Done):
            status, reason = 200, end.reason.value
            prompt, tokens = end.prompt_eval_count, end.eval_count
        else:
            status, reason = (end.status, "error") if end else (499, "cancel")
            prompt, tokens = 0, 0
        ttft = self.first - w.enqueued if self.first else None
        itl = (self.last - self.first) / (tokens - 1) if self.first and tokens > 1 else None
        return RequestFinished(**about(w), status=status, reason=reason, prompt_tokens=prompt, tokens=tokens,
                               latency_s=now - w.enqueued, ttft_s=ttft, itl_s=itl)
