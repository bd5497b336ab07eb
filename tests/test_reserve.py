"""The interactive lane's reserved slot (scheduler/reserve.py): batch requests leave one slot of a
runner free while interactive users are about, so an interactive request starts at once behind a
flood instead of waiting for a flood request to end. Unit tests on the fake runner
(test_scheduler_unit's), then the real model."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import SMOL
from helpers import ps, stream_generate, wait_until, warm
from test_eta import _waiter
from test_scheduler_unit import make, run, spec

from corral.config import Settings
from corral.runner.protocol import GenerationOptions
from corral.scheduler.eta import Predictor, plan
from corral.scheduler.events import Done, Queued
from corral.scheduler.reserve import Reserve
from corral.scheduler.state import Runner, RunnerState
from corral.scheduler.tenants import Lane, Ticket

BATCH, INTERACTIVE = Ticket(lane=Lane.BATCH), Ticket(lane=Lane.INTERACTIVE)


async def _events(s, waiter, n: int) -> list:
    return [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=n))]


def test_batch_leaves_a_slot_free_and_an_interactive_request_takes_it_at_once():
    async def main():
        s = make()
        sp = spec("m", 100, slots=4)
        await run(s, sp)  # loaded
        flood = [s.admit(sp, 60, BATCH) for _ in range(5)]
        runner = s.runners[0]
        assert runner.busy == 3 and [s.position(w) for w in flood] == [0, 0, 0, 1, 2]
        assert s.queued() == 2 and s.snapshot().runners[0].slots_reserved == 1
        user = s.admit(sp, 60, INTERACTIVE)
        assert s.position(user) == 0 and runner.busy == 4  # started at once, ahead of the queued flood
        outs = await asyncio.gather(*(_events(s, w, 20) for w in flood), _events(s, user, 2))
        assert all(isinstance(o[-1], Done) and o[-1].eval_count == n for o, n in zip(outs, [20] * 5 + [2]))
        assert isinstance(outs[3][0], Queued) and runner.busy == 0  # the flood waited, and nothing was lost
    asyncio.run(main())


@pytest.mark.parametrize("kw, slots", [({"interactive_reserve": 0.0}, 4), ({}, 1)])
def test_no_reserve_when_off_or_with_a_single_slot(kw, slots):
    async def main():
        s = make(**kw)
        sp = spec("m", 100, slots=slots)
        await run(s, sp)
        flood = [s.admit(sp, 60, BATCH) for _ in range(slots)]
        assert s.runners[0].busy == slots and s.snapshot().runners[0].slots_reserved == 0
        await asyncio.gather(*(_events(s, w, 2) for w in flood))
    asyncio.run(main())


def test_the_reserve_lapses_after_a_quiet_window_and_an_interactive_arrival_renews_it():
    sp = spec("m", 100, slots=4)
    reserve = Reserve(window=10.0, now=0.0)
    assert reserve.held(sp, 5.0) == 1  # the server just started: interactive users may come
    assert reserve.held(sp, 11.0) == 0  # nobody came: batch work gets every slot
    user = _waiter(sp)
    user.ticket, user.enqueued = INTERACTIVE, 20.0
    reserve.saw(user)
    assert reserve.held(sp, 25.0) == 1 and reserve.held(spec("other", 100, slots=4), 25.0) == 0
    assert reserve.held_for(user, 25.0) == 0  # never held from an interactive request
    assert Settings.from_env({"CORRAL_INTERACTIVE_RESERVE": "0"}).interactive_reserve == 0
    assert Settings.from_env({"CORRAL_INTERACTIVE_RESERVE": "2m"}).interactive_reserve == 120


def test_eta_of_a_batch_request_waits_for_the_reserved_slot_too():
    sp = spec("m", 2, slots=2)
    predictor = Predictor()
    predictor.finished(_waiter(sp, generated=11, started=0.0, first=0.0), ended=1.0)  # 0.1 s a token, 11 long
    runner = Runner(sp, handle=None, estimate=sp.estimate(), state=RunnerState.READY, busy=1)
    holder = _waiter(sp, limit=11, generated=1, started=9.0, first=9.0)  # 10 tokens left: 1 s
    batch, user = _waiter(sp, limit=11), _waiter(sp, limit=11)
    batch.ticket, user.ticket = BATCH, INTERACTIVE
    assert plan([batch], [runner], {holder: runner}, predictor, now=10.0, held=0)[batch] == pytest.approx(0)
    assert plan([batch], [runner], {holder: runner}, predictor, now=10.0, held=1)[batch] == pytest.approx(1.0)
    assert plan([user], [runner], {holder: runner}, predictor, now=10.0, held=1)[user] == pytest.approx(0)


# -- the real model ---------------------------------------------------------------------------
# A batch answer that cannot end early (the grammar wants 5000 numbers): it ends at num_predict.
LONG: dict[str, Any] = {"format": {"type": "array", "items": {"type": "integer"}, "minItems": 5000},
                        "priority": "batch"}
LONG_TOKENS = 160


def test_live_interactive_starts_while_the_flood_holds_all_but_the_reserved_slot(start_server):
    server = start_server(OLLAMA_NUM_PARALLEL="4", OLLAMA_NUM_THREADS="1")
    warm(server.url, SMOL)
    options = {"temperature": 0, "num_predict": LONG_TOKENS}

    def flood_holds_three() -> bool:
        m = ps(server.url).get(SMOL, {})
        return m.get("slots_busy") == 3 and m.get("queue") == 1

    async def main():
        flood = [asyncio.create_task(stream_generate(server.url, SMOL, f"Count from {i}.", options, **LONG))
                 for i in range(4)]
        assert await asyncio.to_thread(wait_until, flood_holds_three, 60), ps(server.url)
        shown = ps(server.url)[SMOL]
        user = await stream_generate(server.url, SMOL, "Say hi.", {"temperature": 0, "num_predict": 4},
                                     priority="interactive")
        return shown, user, await asyncio.gather(*flood)

    shown, user, flood = asyncio.run(main())
    assert shown["slots_reserved"] == 1 and shown["slots_total"] == 4
    assert user["error"] is None and user["token_times"] and not user["positions"]  # it never queued
    running, queued = [r for r in flood if not r["positions"]], [r for r in flood if r["positions"]]
    assert len(running) == 3 and len(queued) == 1
    # Its first token came while all three running flood streams were still generating ...
    assert user["token_times"][0] < min(r["end"] for r in running)
    # ... and the fourth flood request took a slot only when one of them had ended (batch holds 3).
    assert queued[0]["token_times"][0] > min(r["end"] for r in running)
    assert all(r["error"] is None and r["final"]["eval_count"] == LONG_TOKENS for r in flood)  # none lost
    ends = httpx.get(server.url + "/api/ps", timeout=10).json()["models"][0]
    assert ends["slots_busy"] == 0
