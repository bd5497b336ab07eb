"""Predicted starts (eta_s): when will a waiting request take a slot?

One predictor for everything that needs a start time: the `eta_s` of a waiting stream, the
queues in /api/ps, and the deadline check at admission (deadlines.py). Per model it measures:

- `step`: seconds per generated token while batched (from a request's first token to its last);
- `lead`: seconds from taking a slot to the first token (prompt evaluation and the first step);
- recent lengths (tokens generated), and the last load time.

A model's slots are simulated: each busy slot frees when its request's expected remaining time
is over; the requests ahead in service order (lanes and fair shares decide it, queueing.py) each
take the earliest free slot for their expected duration; a request starts at the next free slot,
after a load when no runner serves it; a batch request waits for one slot more while the
interactive lane holds its reserved slot (reserve.py). A request's expected length is capped by
its num_predict and its context, and otherwise is the mean of recent lengths *longer than what it has already
generated*: a request that has run long is likely to run longer, where the plain mean would call
it about to end.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.scheduler.state import ModelSpec, Runner, RunnerState, Waiter
from corral.scheduler.tenants import Lane

SMOOTHING = 0.25  # weight of the newest request in the running means of step and lead
LENGTHS_KEPT = 64  # recent request lengths per model
FIRST_LENGTH = 64.0  # tokens expected of a request before any has finished
LOAD_BYTES_PER_S = 500e6  # a first load's guess, before one was measured (page cache cold-ish)
LOAD_FLOOR_S = 0.5  # process start and llama.cpp's setup


@dataclass
class _Measured:
    step: float | None = None
    lead: float = 0.0
    lengths: deque[int] = field(default_factory=lambda: deque(maxlen=LENGTHS_KEPT))
    load: float | None = None


def _mean_step(old: float | None, new: float) -> float:
    return new if old is None else old + SMOOTHING * (new - old)


class Predictor:
    """Per-model measurements and the expected times built from them."""

    def __init__(self) -> None:
        self._m: dict[str, _Measured] = {}

    def _of(self, model: str) -> _Measured:
        return self._m.setdefault(model, _Measured())

    def loaded(self, model: str, seconds: float) -> None:
        self._of(model).load = seconds

    def finished(self, waiter: Waiter, ended: float) -> None:
        """A generating request ended (monotonic `ended`): learn its lead, step and length."""
        m = self._of(waiter.model)
        if waiter.generated == 0:
            return
        m.lead = _mean_step(m.lead if m.step is not None else None, waiter.first_token - waiter.started)
        if waiter.generated > 1:
            m.step = _mean_step(m.step, (ended - waiter.first_token) / (waiter.generated - 1))
        m.lengths.append(waiter.generated)

    def load_time(self, spec: ModelSpec) -> float:
        measured = self._of(spec.name).load
        return measured if measured is not None else LOAD_FLOOR_S + spec.info.tensor_bytes / LOAD_BYTES_PER_S

    def step(self, model: str, running: Iterable[Waiter], now: float) -> float | None:
        """Measured seconds per token; before a request finished, what running ones show so far."""
        if (step := self._of(model).step) is not None:
            return step
        live = [(now - w.first_token) / (w.generated - 1) for w in running if w.generated > 1]
        return sum(live) / len(live) if live else None

    def tokens_left(self, waiter: Waiter) -> float:
        """Tokens a request is expected to generate from now on."""
        cap = waiter.limit or waiter.spec.n_ctx
        left = max(cap - waiter.generated, 0)
        longer = [n - waiter.generated for n in self._of(waiter.model).lengths if n > waiter.generated]
        if longer:
            return min(left, sum(longer) / len(longer))
        if self._of(waiter.model).lengths:  # it already outran every recent request: a few more
            return min(left, 1.0)
        return min(left, max(FIRST_LENGTH - waiter.generated, 1.0))

    def remaining(self, waiter: Waiter, step: float, now: float) -> float:
        """Seconds until a running request frees its slot."""
        lead = 0.0 if waiter.generated else max(self._of(waiter.model).lead - (now - waiter.started), 0.0)
        return lead + self.tokens_left(waiter) * step

    def duration(self, waiter: Waiter, step: float) -> float:
        """Seconds a waiting request will hold its slot."""
        return self._of(waiter.model).lead + self.tokens_left(waiter) * step


def free_times(spec: ModelSpec, runners: Sequence[Runner], running: Mapping[Waiter, Runner],
               predictor: Predictor, step: float, now: float) -> list[float]:
    """Seconds from now at which each slot a request for `spec` could take frees up."""
    serving = [r for r in runners if r.serves(spec)]
    if not serving:
        # A load first; a runner of this model with other options must drain before its reload.
        same = [predictor.remaining(w, step, now) for w, r in running.items() if r.spec.name == spec.name]
        return [max(same, default=0.0) + predictor.load_time(spec)] * spec.n_slots
    times = []
    for r in serving:
        delay = max(predictor.load_time(r.spec) - (now - r.created), 0.0) if r.state == RunnerState.LOADING else 0.0
        held = [predictor.remaining(w, step, now) for w, on in running.items() if on is r]
        times += [delay + t for t in held + [0.0] * max(r.spec.n_slots - len(held), 0)]
    return times


def plan(queue: Sequence[Waiter], runners: Sequence[Runner], running: Mapping[Waiter, Runner],
         predictor: Predictor, now: float, held: int = 0) -> dict[Waiter, float]:
    """Predicted seconds until each waiter of one model's `queue` (in service order) starts; empty
    while nothing has measured the model's step time. While `held` slots are reserved for the
    interactive lane (reserve.py), a batch request starts only when `held` + 1 slots are free."""
    if not queue:
        return {}
    model = queue[0].model
    step = predictor.step(model, (w for w in running if w.model == model), now)
    if step is None:
        return {}
    slots = free_times(queue[0].spec, runners, running, predictor, step, now)
    heapq.heapify(slots)
    starts = {}
    for waiter in queue:
        need = 1 + (held if waiter.ticket.lane is Lane.BATCH else 0)
        free = [heapq.heappop(slots) for _ in range(min(need, len(slots)))]
        start = free[-1] if free else 0.0
        starts[waiter] = start
        for _ in free[1:]:  # the slots it left free are free from its start on
            heapq.heappush(slots, start)
        heapq.heappush(slots, start + predictor.duration(waiter, step))
    return starts
