"""Deadlines: a request may say when its answer stops being useful (X-Corral-Deadline).

Three moments: at admission a request whose predicted start is already past its deadline is
refused (503 with Retry-After = the predicted wait) rather than left to wait in vain; a queued
request whose deadline passes leaves the queue with a 504; a running one stops there, its answer
ending with done_reason "deadline". The predicted start is eta.py's, the one the waiting streams'
eta_s show; with nothing measured yet, nothing is refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from corral.errors import TimedOut, Unavailable
from corral.scheduler.events import Done, DoneReason, Failed

T = TypeVar("T")


class DeadlineUnmeetable(Unavailable):
    """Refused at admission: the request is predicted to start after its deadline."""

    def __init__(self, wait: float, left: float) -> None:
        super().__init__(f"the request cannot start before its deadline: predicted wait {wait:.1f} s, "
                         f"deadline in {max(left, 0):.1f} s")
        self.headers = {"Retry-After": str(max(math.ceil(wait), 1))}  # type: ignore[misc]  # this one's own


class DeadlineExceeded(TimedOut):
    """The deadline passed while the request waited for a slot."""


def refusal(wait: float | None, deadline: float) -> DeadlineUnmeetable | None:
    """The refusal when the predicted start (`wait` seconds from now, eta.py; None: nothing
    measured yet) is past `deadline` (monotonic), else None."""
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
