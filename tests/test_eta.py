"""Predicted starts (eta.py): the numbers behind a waiting stream's eta_s, /api/ps's queues and the
deadline check. The unit tests use test_scheduler_unit's fake runner (5 ms a token); the live one
runs the real model."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import SMOL
from helpers import stream_generate, warm
from test_scheduler_unit import make, run, spec

from corral.runner.protocol import GenerationOptions
from corral.scheduler.eta import Predictor, plan
from corral.scheduler.events import Done, Queued
from corral.scheduler.state import Runner, RunnerState, Waiter


def _waiter(sp, limit: int = 0, generated: int = 0, started: float = 0.0, first: float = 0.0) -> Waiter:
    w = Waiter(sp, 60, asyncio.get_event_loop_policy().new_event_loop().create_future(), started=started)
    w.limit, w.generated, w.first_token = limit, generated, first
    return w


def test_nothing_is_predicted_before_a_step_was_measured_and_a_load_counts():
    sp = spec("m", 100, slots=2)
    predictor = Predictor()
    queue = [_waiter(sp, limit=10) for _ in range(3)]
    assert plan(queue, [], {}, predictor, now=100.0) == {}
    done = _waiter(sp, generated=11, started=0.0, first=1.0)
    predictor.finished(done, ended=2.0)  # lead 1 s, 0.1 s a token
    predictor.loaded("m", 3.0)
    starts = plan(queue, [], {}, predictor, now=100.0)
    # No runner: a 3 s load, then two slots; the third waits for the first of them (1 s + 10 x 0.1 s).
    assert starts[queue[0]] == pytest.approx(3.0) and starts[queue[1]] == pytest.approx(3.0)
    assert starts[queue[2]] == pytest.approx(5.0)


def test_running_requests_free_their_slots_by_their_remaining_tokens():
    sp = spec("m", 100, slots=2)
    predictor = Predictor()
    for n in (11, 14):  # 0.1 s a token, no lead
        predictor.finished(_waiter(sp, generated=n, started=0.0, first=0.0), ended=(n - 1) * 0.1)
    runner = Runner(sp, handle=None, estimate=sp.estimate(), state=RunnerState.READY, busy=2)
    # Recent lengths past 10 are 11 and 14: 2.5 tokens more expected, unless num_predict says less.
    near_end = _waiter(sp, limit=12, generated=10, started=9.0, first=9.0)  # 2 tokens left: 0.2 s
    long = _waiter(sp, limit=50, generated=10, started=9.0, first=9.0)  # 0.25 s
    queued = [_waiter(sp, limit=5), _waiter(sp, limit=5)]
    starts = plan(queued, [runner], {near_end: runner, long: runner}, predictor, now=10.0)
    assert starts[queued[0]] == pytest.approx(0.2)  # near_end's slot
    assert starts[queued[1]] == pytest.approx(0.25)  # then long's
    past_all = _waiter(sp, limit=50, generated=30, started=9.0, first=9.0)  # it outran every recent one
    assert predictor.tokens_left(past_all) == pytest.approx(1.0)


def test_a_longer_history_makes_a_running_request_expected_to_run_longer():
    sp = spec("m", 100)
    predictor = Predictor()
    for n in (10, 10, 10, 100):
        predictor.finished(_waiter(sp, generated=n, started=0.0, first=0.0), ended=(n - 1) * 0.01)
    fresh, past_ten = _waiter(sp, generated=0), _waiter(sp, generated=20)
    assert predictor.tokens_left(fresh) == pytest.approx(32.5)  # the mean of 10, 10, 10, 100
    assert predictor.tokens_left(past_ten) == pytest.approx(80)  # only the 100 ran past 20
    assert predictor.tokens_left(_waiter(sp, limit=30, generated=20)) == pytest.approx(10)  # its num_predict


def test_queued_events_carry_a_falling_eta():
    async def main():
        s = make()
        sp = spec("m", 100)
        await run(s, sp, n=20)  # measures the step: ~5 ms a token
        tasks = [asyncio.create_task(run(s, sp, n=20)) for _ in range(3)]
        await asyncio.sleep(0.01)
        last = s.admit(sp, 60)
        events = [e async for e in s.generate(last, "p", GenerationOptions(num_predict=20))]
        await asyncio.gather(*tasks)
        queued = [e for e in events if isinstance(e, Queued)]
        assert [q.position for q in queued] == [3, 2, 1] and isinstance(events[-1], Done)
        etas = [q.eta_s for q in queued]
        assert all(e is not None and e > 0 for e in etas), etas
        assert etas == sorted(etas, reverse=True), etas
    asyncio.run(main())


def test_live_queued_stream_carries_eta_and_ps_shows_the_queue(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="1")
    warm(server.url, SMOL)
    options = {"temperature": 0, "num_predict": 48}
    asyncio.run(stream_generate(server.url, SMOL, "Tell me about the sea.", options))  # measures a step

    async def scenario():
        tasks = []
        for _ in range(4):
            tasks.append(asyncio.create_task(stream_generate(server.url, SMOL, "Tell me about the sea.", options)))
            await asyncio.sleep(0.05)  # arrival order = service order
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=server.url) as client:
            queues = (await client.get("/api/ps")).json()["queues"]
        return await asyncio.gather(*tasks), queues

    records, queues = asyncio.run(scenario())
    last = records[-1]
    assert last["positions"] == [3, 2, 1] and last["final"]["eval_count"] > 0
    etas = [eta for _, eta in last["etas"]]
    assert all(isinstance(e, float) and e > 0 for e in etas), etas
    assert etas == sorted(etas, reverse=True), etas  # non-increasing as it moves up
    # How close the prediction comes is measured by benchmarks/fairness.py, not asserted here: on a
    # shared machine the step time it rests on moves under it.
    (queue,) = queues.values()
    assert [q["position"] for q in queue] == list(range(1, len(queue) + 1)) and len(queue) >= 2
    assert all(q["eta_s"] > 0 for q in queue) and [q["eta_s"] for q in queue] == sorted(q["eta_s"] for q in queue)
    assert {q["lane"] for q in queue} == {"interactive"}
