"""Which loaded models give way to a waiting one, and when.

- Pins (CORRAL_PIN): a pinned model is never unloaded, not at keep-alive expiry, not for another
  model. A model that could only fit by unloading a pinned one is refused at once (NeverFits,
  naming the pin) instead of waiting for memory that will never come.
- Cost: unloading an idle model costs its measured load time if it is asked for again before its
  keep-alive would have run out, which happens with probability 1 - e^(-λK) (λ: its recent request
  rate, K: its keep-alive left). The cheapest goes first, least recently used on ties. With equal
  demand and load times this is shortest keep-alive first; a model that is busy and slow to load
  stays over one that was asked for once.
- Swap window: under a tight budget two models alternating would each unload the other on every
  request (llama.cpp #21678). A waiting model takes the memory of a loaded model that has requests
  of its own waiting only once its oldest request has waited the window and the loaded model has
  been loaded for the window (of an idle one with none, once it has been idle IDLE_GRACE: its
  client may be about to send the next). Until then the loaded model goes on serving its own queue;
  after it, the loaded model drains (takes no new request) and is unloaded when idle, so the other
  one is not starved either: the two take turns of at least a window each. The window is
  CORRAL_SWAP_WINDOW, else twice the waiting model's load time (at least a second): a swap then
  costs at most a third of the time the two models share.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from corral.config import FOREVER, Settings
from corral.models.names import ModelName
from corral.scheduler.eta import Predictor
from corral.scheduler.memory import Pool
from corral.scheduler.placement import Pools
from corral.scheduler.state import ModelSpec, NeverFits, Runner, RunnerState, Waiter

DEMAND_WINDOW = 600.0  # seconds of request history behind a model's rate
MIN_WINDOW = 1.0  # the auto swap window's floor
# A model used this recently may be between two requests of a client in a loop: a waiting model
# does not take its memory yet (unless its own window is over).
IDLE_GRACE = 0.5
# Loads shorter than this count as this long: their differences are noise, not a reason to keep
# one model over another.
LOAD_FLOOR = 1.0


class Demand:
    """Recent request arrivals per model."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def note(self, model: str, now: float) -> None:
        self._times.setdefault(model, deque()).append(now)

    def rate(self, model: str, now: float) -> float:
        """Requests per second over the last DEMAND_WINDOW."""
        times = self._times.get(model)
        while times and times[0] < now - DEMAND_WINDOW:
            times.popleft()
        return len(times) / DEMAND_WINDOW if times else 0.0


def _pin_name(name: str) -> str:
    try:
        return ModelName.parse(name).short.lower()
    except ValueError:
        return name.strip().lower()


class Eviction:
    def __init__(self, settings: Settings, placement: Pools, predictor: Predictor) -> None:
        self.pins = frozenset(_pin_name(n) for n in settings.pinned)
        self.window_setting = settings.swap_window
        self.placement = placement
        self.predictor = predictor
        self.demand = Demand()

    def pinned(self, name: str) -> bool:
        return name.lower() in self.pins

    def window(self, spec: ModelSpec) -> float:
        return self.window_setting or max(2 * self.predictor.load_time(spec), MIN_WINDOW)

    def cost(self, runner: Runner, now: float) -> float:
        """Expected load seconds that unloading this runner will cost."""
        left = FOREVER if runner.keep_alive == FOREVER else max(runner.last_used + runner.keep_alive - now, 0.0)
        chance = 1.0 - math.exp(-self.demand.rate(runner.spec.name, now) * left) if left < FOREVER else 1.0
        return chance * max(self.predictor.load_time(runner.spec), LOAD_FLOOR)

    def _ordered(self, runners: Iterable[Runner], now: float) -> list[Runner]:
        """Runners that may be unloaded at all, cheapest first."""
        mine = [r for r in runners if r.state == RunnerState.READY and not self.pinned(r.spec.name)]
        return sorted(mine, key=lambda r: (self.cost(r, now), r.last_used))

    def _due(self, waiter: Waiter, runner: Runner) -> float:
        """When `waiter` may take `runner`'s memory even though its model has requests of its own:
        both the waiter and the runner (since its load) have had a window."""
        return max(waiter.enqueued, runner.ready_at) + self.window(waiter.spec)

    def _free_at(self, waiter: Waiter, runner: Runner, wanted: set[str]) -> float:
        """When an idle runner may be unloaded for `waiter`."""
        if runner.spec.name in wanted:
            return self._due(waiter, runner)
        return min(self._due(waiter, runner), runner.last_used + IDLE_GRACE)

    def victims(self, runners: list[Runner], waiter: Waiter, wanted: set[str], pools: Sequence[Pool],
                now: float | None = None) -> tuple[list[Runner], float | None]:
        """Idle runners to unload now so that the waiter's model fits in one of `pools`; or none,
        and the seconds after which to ask again (None: only a state change can help)."""
        now = time.monotonic() if now is None else now
        # Cheapest first, but models nobody waits for before those with a queue of their own.
        idle = sorted((r for r in self._ordered(runners, now) if r.idle), key=lambda r: r.spec.name in wanted)
        need = waiter.spec.estimate().total
        for pool in pools:
            if chosen := self.placement.evictions(runners, pool, need, idle):
                at = max(self._free_at(waiter, r, wanted) for r in chosen)
                return (chosen, None) if at <= now else ([], max(at - now, 0.01))  # not yet: ask again then
        return [], None

    def draining(self, runners: list[Runner], waiters: Iterable[Waiter],
                 now: float | None = None) -> tuple[set[Runner], float | None]:
        """Runners that take no new request (a waiting model's window is over and it needs their
        memory), and the seconds until the next such window ends (None: none pending)."""
        now = time.monotonic() if now is None else now
        oldest: dict[str, Waiter] = {}
        for w in waiters:
            if w.model not in oldest or w.enqueued < oldest[w.model].enqueued:
                oldest[w.model] = w
        out: set[Runner] = set()
        pending: list[float] = []
        if any(r.state == RunnerState.UNLOADING for r in runners):
            return out, None  # room is coming; _kick runs again when it has come
        for model, w in oldest.items():
            if any(r.spec.name == model for r in runners):
                continue  # served, loading or reloading
            need = w.spec.estimate().total
            pools = self.placement.for_spec(w.spec)
            if any(self.placement.fits(runners, pool, need) for pool in pools):
                continue
            for pool in pools:
                if chosen := self.placement.evictions(runners, pool, need, self._ordered(runners, now)):
                    due = max(self._due(w, r) for r in chosen)
                    if due <= now:
                        out.update(chosen)
                    else:
                        pending.append(due - now)
                    break
        return out, min(pending, default=None)

    def pin_conflict(self, spec: ModelSpec, runners: Sequence[Runner]) -> NeverFits | None:
        """The refusal for a model that could only fit by unloading a pinned one."""
        pinned = [r for r in runners if self.pinned(r.spec.name) and r.spec.name != spec.name]
        if not pinned:
            return None
        need = spec.estimate().total
        for pool in self.placement.for_spec(spec):
            held = sum(r.estimate.total for r in pinned if r.pool == pool)
            if need + held <= self.placement.budgets[pool] and len(pinned) < self.placement.max_loaded:
                return None
        names = ", ".join(f"'{n}'" for n in sorted({r.spec.name for r in pinned}))
        return NeverFits(f"model '{spec.name}' needs an estimated {need / 2**20:.0f} MiB and can only fit "
                         f"by unloading pinned model {names} (CORRAL_PIN)")


class Alarm:
    """One pending call of `callback`, at the soonest time asked for (a swap window's end)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def within(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._handle is not None and self._handle.when() <= loop.time() + delay:
            return  # a call already pending comes sooner
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        # Forgotten before the callback runs, which usually asks again: uvloop (Ray's loop) fires a
        # timer up to a millisecond before its when(), so a fired handle cannot be told from a
        # pending one by its time, and taking it for pending lost the alarm (a queue that hung).
        self._handle = None
        self.callback()
