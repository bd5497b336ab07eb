"""Views over the waiting requests: who would wait, how many wait, and each model's queue in
service order (cached until the next state change). Plain functions of the scheduler's lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corral.scheduler.queueing import FairQueue
from corral.scheduler.state import ModelSpec, Runner, Waiter
from corral.scheduler.tenants import Lane


def capacity(spec: ModelSpec, runners: Sequence[Runner], held: int = 0) -> int:
    """Slots requests for this model could take without waiting behind anyone, when `held` slots
    of each runner are not theirs to take (reserve.py)."""
    serving = [r for r in runners if r.serves(spec)]
    if not serving and not any(r.spec.name == spec.name for r in runners):
        return max(spec.n_slots - held, 0)  # a load starts at once; its slots are these requests' to take
    return sum(max(r.spec.n_slots - r.busy - held, 0) for r in serving)


def would_queue(spec: ModelSpec, waiters: Sequence[Waiter], runners: Sequence[Runner], held: int = 0) -> bool:
    return sum(1 for w in waiters if w.spec.name == spec.name) >= capacity(spec, runners, held)


def queued(waiters: Sequence[Waiter], runners: Sequence[Runner], name: str | None = None,
           held: Callable[[ModelSpec], int] = lambda spec: 0) -> int:
    """Admitted requests that wait for a slot, a load or memory; a request whose slot is already
    its own the moment its runner is ready does not count. Interactive requests take free slots
    first; batch ones all but the `held` slots of each runner."""
    total = 0
    for model in ({w.spec.name for w in waiters} if name is None else {name}):
        waiting = [w for w in waiters if w.spec.name == model]
        if waiting:
            spec = waiting[0].spec
            batch = sum(w.ticket.lane is Lane.BATCH for w in waiting)
            interactive = len(waiting) - batch
            placed = min(interactive, capacity(spec, runners))
            batch_slots = max(capacity(spec, runners, held(spec)) - placed, 0)
            total += interactive - placed + max(batch - batch_slots, 0)
    return total


class ServiceOrder:
    """Each model's waiters in the policy's order of service, computed once per state."""

    def __init__(self, policy: FairQueue) -> None:
        self.policy = policy
        self._order: dict[str, list[Waiter]] | None = None

    def clear(self) -> None:
        self._order = None

    def of(self, model: str, waiters: Sequence[Waiter]) -> list[Waiter]:
        if self._order is None:
            self._order = {name: self.policy.order([w for w in waiters if w.model == name])
                           for name in {w.model for w in waiters}}
        return self._order.get(model, [])
