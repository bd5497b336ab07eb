"""Deadlines in the scheduler, with the fake runner of test_scheduler_unit (5 ms a token): refused
up front when the predicted start is past it, leaving the queue when it passes there, a running
request stopped with done_reason "deadline"."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_scheduler_unit import make, run, spec

from corral.runner.protocol import GenerationOptions
from corral.scheduler.deadlines import DeadlineUnmeetable
from corral.scheduler.events import Done, DoneReason, Failed, Queued, Text
from corral.scheduler.tenants import Ticket


def test_a_running_request_stops_at_its_deadline():
    async def main():
        s = make()
        sp = spec("m", 100)
        await run(s, sp)  # loaded
        waiter = s.admit(sp, 60, Ticket(deadline=time.monotonic() + 0.1))
        out = [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=400))]  # ~2 s of tokens
        done = out[-1]
        assert isinstance(done, Done) and done.reason == DoneReason.DEADLINE, out[-3:]
        texts = sum(isinstance(e, Text) for e in out)
        assert 0 < texts < 400 and done.eval_count == texts
        assert s.runners[0].busy == 0  # its slot is free again
        assert await run(s, sp)  # and serves the next request
    asyncio.run(main())


def test_a_queued_request_leaves_when_its_deadline_passes():
    async def main():
        s = make()
        sp = spec("m", 100)
        await run(s, sp)
        busy = asyncio.create_task(run(s, sp, n=100))  # holds the one slot for ~0.5 s
        await asyncio.sleep(0.02)
        waiter = s.admit(sp, 60, Ticket(deadline=time.monotonic() + 0.1))
        out = [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=3))]
        assert isinstance(out[0], Queued) and out[0].position == 1
        assert isinstance(out[-1], Failed) and out[-1].status == 504 and "deadline" in out[-1].message
        assert not s.waiters
        await busy
    asyncio.run(main())


def test_refused_at_once_when_the_predicted_start_is_past_the_deadline():
    async def main():
        s = make()
        sp = spec("m", 100)
        await run(s, sp, n=40)  # measured: a request holds the slot ~0.2 s
        busy = [asyncio.create_task(run(s, sp, n=40)) for _ in range(3)]  # one runs, two wait
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineUnmeetable) as info:
            s.admit(sp, 60, Ticket(deadline=time.monotonic() + 0.05))
        assert info.value.status == 503 and int(info.value.headers["Retry-After"]) >= 1
        assert "predicted wait" in str(info.value)
        late = s.admit(sp, 60, Ticket(deadline=time.monotonic() + 30))  # a deadline it can meet
        out = [e async for e in s.generate(late, "p", GenerationOptions(num_predict=3))]
        assert isinstance(out[-1], Done) and out[-1].reason != DoneReason.DEADLINE
        await asyncio.gather(*busy)
    asyncio.run(main())
