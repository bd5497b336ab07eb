"""The queue policy alone (scheduler/queueing.py): lanes, weighted fair shares, tenant limits,
with a fake clock (arrival times given by hand) and one slot served at a time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from corral.scheduler.events import Done
from corral.scheduler.queueing import FIRST_COST, FairQueue
from corral.scheduler.state import Busy, TenantBusy
from corral.scheduler.tenants import Lane, Tenant, Ticket


@dataclass(eq=False)
class Req:
    model: str
    ticket: Ticket
    enqueued: float


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def serve(q: FairQueue, waiting: list[Req], n: int, tokens: int = 10) -> list[Req]:
    """Serve `n` requests one slot at a time (each ends before the next starts)."""
    served = []
    for _ in range(n):
        head = q.next(waiting)
        if head is None:
            break
        waiting.remove(head)
        q.started(head)
        q.finished(head, tokens)
        served.append(head)
    return served


def add(q: FairQueue, waiting: list[Req], clock: Clock, ticket: Ticket, model: str = "m") -> Req:
    r = Req(model, ticket, clock())
    q.arrive(r, waiting)
    waiting.append(r)
    return r


def test_one_tenant_one_lane_is_fifo():
    q, clock, waiting = FairQueue(), Clock(), []
    reqs = [add(q, waiting, clock, Ticket()) for _ in range(20)]
    assert q.order(waiting) == reqs
    assert serve(q, waiting, 20) == reqs


def test_interactive_goes_before_batch_and_fifo_within_each():
    q, clock, waiting = FairQueue(), Clock(), []
    batch = [add(q, waiting, clock, Ticket(lane=Lane.BATCH)) for _ in range(5)]
    inter = [add(q, waiting, clock, Ticket(lane=Lane.INTERACTIVE)) for _ in range(2)]
    assert serve(q, waiting, 7) == inter + batch


def test_weights_share_slots_in_ratio_while_both_flood():
    q, clock, waiting = FairQueue(), Clock(), []
    a, b = Ticket(Tenant("a", weight=3)), Ticket(Tenant("b", weight=1))
    for _ in range(100):
        add(q, waiting, clock, a)
        add(q, waiting, clock, b)
    counts = Counter(r.ticket.tenant.name for r in serve(q, waiting, 80))
    assert counts == {"a": 60, "b": 20}


def test_ratio_holds_when_request_sizes_differ_by_tokens():
    # "a" asks for 4x longer answers than "b": equal weights share tokens, not requests.
    q, clock, waiting = FairQueue(), Clock(), []
    a, b = Ticket(Tenant("a")), Ticket(Tenant("b"))
    for _ in range(200):
        add(q, waiting, clock, a)
        add(q, waiting, clock, b)
    tokens: Counter[str] = Counter()
    for _ in range(100):
        head = q.next(waiting)
        assert head is not None
        waiting.remove(head)
        q.started(head)
        n = 40 if head.ticket.tenant.name == "a" else 10
        q.finished(head, n)
        tokens[head.ticket.tenant.name] += n
    assert abs(tokens["a"] - tokens["b"]) <= 2 * 40 + FIRST_COST


def test_a_flood_cannot_push_a_newcomer_to_the_back():
    q, clock, waiting = FairQueue(), Clock(), []
    flood = Ticket(Tenant("flood"))
    for _ in range(200):
        add(q, waiting, clock, flood)
    serve(q, waiting, 30)  # the flood has been served for a while
    one = add(q, waiting, clock, Ticket(Tenant("one")))
    assert q.order(waiting).index(one) <= 1
    assert one in serve(q, waiting, 2)


def test_idle_tenant_earns_no_credit_to_burst_with():
    q, clock, waiting = FairQueue(), Clock(), []
    a, b = Ticket(Tenant("a")), Ticket(Tenant("b"))
    for _ in range(50):
        add(q, waiting, clock, a)
    serve(q, waiting, 50)  # "b" was idle all along
    for _ in range(20):
        add(q, waiting, clock, a)
        add(q, waiting, clock, b)
    counts = Counter(r.ticket.tenant.name for r in serve(q, waiting, 20))
    assert abs(counts["a"] - counts["b"]) <= 2


def test_tenant_at_max_running_is_skipped_not_waited_for():
    q, clock, waiting = FairQueue(), Clock(), []
    capped = Ticket(Tenant("capped", max_running=1))
    first = add(q, waiting, clock, capped)
    second = add(q, waiting, clock, capped)
    other = add(q, waiting, clock, Ticket(Tenant("other")))
    assert q.next(waiting) is first
    waiting.remove(first)
    q.started(first)
    assert q.next(waiting) is other  # "capped" holds its one slot
    waiting.remove(other)
    q.started(other)
    assert q.next(waiting) is None
    q.finished(first, 5)
    assert q.next(waiting) is second


def test_lanes_are_per_model_queues():
    q, clock, waiting = FairQueue(), Clock(), []
    batch_m = add(q, waiting, clock, Ticket(lane=Lane.BATCH), model="m")
    inter_n = add(q, waiting, clock, Ticket(), model="n")
    assert q.next([w for w in waiting if w.model == "m"]) is batch_m
    assert q.next([w for w in waiting if w.model == "n"]) is inter_n


def test_refusals_tenant_limit_is_429_server_bound_is_503_batch_first():
    q, clock, waiting = FairQueue(), Clock(), []
    small = Ticket(Tenant("small", max_queued=2))
    add(q, waiting, clock, small)
    add(q, waiting, clock, small)
    refusal = q.refusal(small, waiting, queued=2, max_queue=100)
    assert isinstance(refusal, TenantBusy) and refusal.status == 429 and refusal.headers["Retry-After"]
    assert q.refusal(Ticket(Tenant("other")), waiting, queued=2, max_queue=100) is None
    # The server's bound: batch meets it a quarter early, interactive at the bound.
    assert isinstance(q.refusal(Ticket(lane=Lane.BATCH), waiting, queued=75, max_queue=100), Busy)
    assert q.refusal(Ticket(lane=Lane.INTERACTIVE), waiting, queued=75, max_queue=100) is None
    full = q.refusal(Ticket(), waiting, queued=100, max_queue=100)
    assert isinstance(full, Busy) and full.status == 503


@pytest.mark.parametrize(("default", "allowance", "asked", "lane"), [
    (Lane.INTERACTIVE, Lane.INTERACTIVE, None, Lane.INTERACTIVE),
    (Lane.BATCH, Lane.INTERACTIVE, None, Lane.BATCH),
    (Lane.BATCH, Lane.INTERACTIVE, Lane.INTERACTIVE, Lane.INTERACTIVE),
    (Lane.BATCH, Lane.BATCH, Lane.INTERACTIVE, Lane.BATCH),  # capped by the allowance
    (Lane.INTERACTIVE, Lane.INTERACTIVE, Lane.BATCH, Lane.BATCH),
])
def test_lane_is_the_asked_one_capped_by_the_allowance(default, allowance, asked, lane):
    assert Tenant("t", priority=default, max_priority=allowance).lane(asked) is lane


def test_scheduler_tenant_limits_429_beside_others_and_max_running():
    """The policy inside the scheduler (fake runner): a tenant's queue limit refuses it alone,
    and a tenant at max_running waits while another takes the free slot."""
    import asyncio

    from test_scheduler_unit import make, run, spec

    from corral.runner.protocol import GenerationOptions
    from corral.scheduler.state import ModelNotAllowed

    async def main():
        s = make()
        sp = spec("m", 100, slots=2)
        await run(s, sp)  # loaded
        capped = Ticket(Tenant("capped", max_running=1, max_queued=1))
        other = Ticket(Tenant("other"))
        first = s.admit(sp, 60, capped)  # takes a slot
        second = s.admit(sp, 60, capped)  # waits: its tenant is at max_running, though a slot is free
        assert s.position(second) == 1 and s.runners[0].busy == 1
        with pytest.raises(TenantBusy):
            s.admit(sp, 60, capped)  # one waiting already: its own limit
        third = s.admit(sp, 60, other)  # another tenant takes the free slot at once
        assert s.position(third) == 0 and s.runners[0].busy == 2
        with pytest.raises(ModelNotAllowed):
            s.admit(sp, 60, Ticket(Tenant("x", models=frozenset({"n:latest"}))))
        outs = await asyncio.gather(*(collect_all(s, w) for w in (first, second, third)))
        assert all(isinstance(o[-1], Done) for o in outs), outs
        text = s.metrics.render().decode()
        assert 'corral_tenant_requests_refused_total{status="429",tenant="capped"} 1.0' in text
        assert 'corral_tenant_requests_started_total{lane="interactive",tenant="capped"} 2.0' in text

    async def collect_all(s, waiter):
        return [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=3))]

    asyncio.run(main())
