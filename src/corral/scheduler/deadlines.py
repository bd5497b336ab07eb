"""Deadlines: a request may say when its answer stops being useful (X-Corral-Deadline).

Three moments: at admission a request whose predicted start is already past its deadline is
refused (503 with Retry-After = the predicted wait) rather than left to wait in vain; a queued
request whose deadline passes leaves the queue with a 504; a running one stops there, its answer
ending with done_reason "deadline". The prediction is deliberately plain: the requests ahead of it
in service order times the measured time a request holds a slot, over the model's slots, plus the
model's last load time when it must be loaded first. With nothing measured yet, nothing is refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from corral.errors import TimedOut, Unavailable
from corral.scheduler.events import Done, DoneReason, Failed

# Weight of the newest request in a model's running mean of slot-holding time.
SMOOTHING = 0.25

T = TypeVar("T")


class DeadlineUnmeetable(Unavailable):
    """Refused at admission: the request is predicted to start after its deadline."""

    def __init__(self, wait: float, left: float) -> None:
        super().__init__(f"the request cannot start before its deadline: predicted wait {wait:.1f} s, "
                         f"deadline in {max(left, 0):.1f} s")
        self.headers = {"Retry-After": str(max(math.ceil(wait), 1))}  # type: ignore[misc]  # this one's own


class DeadlineExceeded(TimedOut):
    """The deadline passed while the request waited for a slot."""


class ServiceTimes:
    """Per model: how long a request holds a slot (running mean) and how long a load took."""

    def __init__(self) -> None:
        self._held: dict[str, float] = {}
        self._load: dict[str, float] = {}

    def held(self, model: str, seconds: float) -> None:
        last = self._held.get(model)
        self._held[model] = seconds if last is None else last + SMOOTHING * (seconds - last)

    def loaded(self, model: str, seconds: float) -> None:
        self._load[model] = seconds

    def predicted_wait(self, model: str, ahead: int, slots: int, must_load: bool) -> float | None:
        """Seconds until a request with `ahead` requests before it (and all slots taken) starts;
        None before anything was measured."""
        held = self._held.get(model)
        if held is None:
            return None
        return (ahead + 1) * held / max(slots, 1) + (self._load.get(model, 0.0) if must_load else 0.0)

    def refusal(self, model: str, ahead: int, slots: int, must_load: bool,
                deadline: float) -> DeadlineUnmeetable | None:
        """The refusal when the predicted start is past `deadline` (monotonic), else None."""
        wait = self.predicted_wait(model, ahead, slots, must_load)
        left = deadline - time.monotonic()
        return DeadlineUnmeetable(wait, left) if wait is not None and wait > left else None


def queue_expired(enqueued: float) -> Failed:
    """The end of a request whose deadline passed while it waited (monotonic `enqueued`)."""
    return Failed(DeadlineExceeded.status, f"deadline exceeded: the request waited "
                  f"{time.monotonic() - enqueued:.2f} s in the queue and did not start in time")


def cut_short(generated: int, started: float, queue_s: float, load_s: float) -> Done:
    """The end of a running request stopped at its deadline, having streamed `generated` pieces."""
    return Done(DoneReason.DEADLINE, eval_count=generated, eval_duration=int((time.monotonic() - started) * 1e9),
                queue_s=queue_s, load_s=load_s)


class Expired:
    """Marks where a running request's deadline cut its stream."""


EXPIRED = Expired()


async def within(deadline: float | None, items: AsyncIterator[T]) -> AsyncIterator[T | Expired]:
    """`items` until the monotonic `deadline`; then EXPIRED, and `items` is closed (a runner's
    stream cancels its request when closed early)."""
    if deadline is None:
        async for item in items:
            yield item
        return
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                yield EXPIRED
                return
            try:
                item = await asyncio.wait_for(anext(items), left)
            except StopAsyncIteration:
                return
            except TimeoutError:
                yield EXPIRED
                return
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
