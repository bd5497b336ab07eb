"""The live view's hub: what the scheduler publishes (on the fake runner of the scheduler's unit
tests), and that a subscriber that never reads loses events instead of holding anyone up."""

from __future__ import annotations

import asyncio

import pytest
from test_scheduler_unit import collect, make, run, spec

from corral.scheduler import bus
from corral.scheduler.scheduler import Busy


def kinds(sub: bus.Subscription) -> list[str]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait().kind)
    return out


def test_a_request_and_a_refusal_are_published_in_order():
    async def main():
        s = make(max_queue=1)
        sub = s.bus.subscribe()
        sp = spec("m", 100, slots=1)
        await run(s, sp, n=4)
        first = kinds(sub)
        assert first == ["request_admitted", "model_loading", "model_loaded", "request_started", "request_finished"]
        done = [e for e in s.bus.history if isinstance(e, bus.RequestFinished)][-1]
        assert (done.model, done.tenant, done.lane, done.status, done.tokens) == ("m", "default", "interactive",
                                                                                 200, 4)
        assert done.ttft_s is not None and done.itl_s is not None and done.latency_s >= done.ttft_s

        running, waiting = s.admit(sp, 60), s.admit(sp, 60)
        with pytest.raises(Busy):
            s.admit(sp, 60)
        await asyncio.gather(collect(s, running), collect(s, waiting))
        events = [e for e in s.bus.history if isinstance(e, (bus.RequestAdmitted, bus.RequestRefused))][-3:]
        assert [(e.kind, getattr(e, "position", None), getattr(e, "status", None)) for e in events] == [
            ("request_admitted", 0, None), ("request_admitted", 1, None), ("request_refused", None, 503)]
    asyncio.run(main())


def test_an_eviction_says_why():
    async def main():
        s = make(memory_mib=1024)
        sub = s.bus.subscribe()
        await run(s, spec("a", 600))
        await run(s, spec("b", 600))
        (evicted,) = [e for e in s.bus.history if isinstance(e, bus.ModelUnloaded)]
        assert evicted.model == "a" and evicted.reason == bus.UnloadReason.EVICTED
        assert "to make room for b" in evicted.detail
        assert kinds(sub).count("model_loaded") == 2
    asyncio.run(main())


def test_a_subscriber_that_never_reads_drops_events_and_blocks_nothing():
    async def main():
        s = make()
        s.bus.queue_size = 8
        stuck = s.bus.subscribe()  # never read
        sp = spec("m", 100, slots=2)
        await asyncio.wait_for(asyncio.gather(*(run(s, sp, n=2) for _ in range(10))), timeout=10)
        assert stuck.queue.qsize() == 8 and stuck.dropped > 0
        late = s.bus.subscribe()  # starts from the recent history, whatever the other's state
        assert late.queue.qsize() == 8 and late.dropped == len(s.bus.history) - 8
    asyncio.run(main())
