"""Admission and placement: which request runs where, and when.

One queue of waiting requests for all models, bounded by max_queue (batch requests by less, so
interactive ones still get in), and per tenant by its max_queued (429). A waiter is placed on a
loaded runner of its model with a free slot; if there is none, the scheduler loads one when it
fits the memory budget and the loaded-model cap, evicting idle runners when it must (fleet.py
loads, expires and unloads runners; eviction.py: pins, cost, the swap window). Waiters for one
model never hold up waiters for another (no head-of-line blocking across models); within a
model, the queue policy (queueing.py: lanes, then tenants' fair shares, then arrival) picks who
goes next.

Plain asyncio: FastAPI wraps this, Ray Serve could too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

from corral.config import Settings
from corral.errors import CorralError
from corral.runner.handle import Reply, RunnerError, RunnerHandle
from corral.runner.protocol import GenerationOptions
from corral.scheduler import bus
from corral.scheduler.bus import about
from corral.scheduler.deadlines import Expired, cut_short, queue_expired, within
from corral.scheduler.deadlines import refusal as deadline_refusal
from corral.scheduler.eta import Predictor, plan
from corral.scheduler.events import Done, Event, Failed, Queued, Text, from_reply
from corral.scheduler.eviction import Eviction
from corral.scheduler.fleet import Fleet, Roster, RunnerFactory
from corral.scheduler.memory import CPU, Gpu, Pool, gpu_inventory, system_budget
from corral.scheduler.metrics import Metrics
from corral.scheduler.placement import Pools
from corral.scheduler.queueing import FairQueue
from corral.scheduler.reserve import Reserve
from corral.scheduler.snapshot import Snapshot, take_snapshot
from corral.scheduler.state import Busy, ModelNotAllowed, ModelSpec, NeverFits, Runner, RunnerState, Waiter
from corral.scheduler.tenants import DEFAULT_TICKET, Ticket
from corral.scheduler.threads import rebalance
from corral.scheduler.waiting import ServiceOrder, queued, would_queue
from corral.scheduler.watchdog import health, watch

__all__ = ["Busy", "ModelSpec", "NeverFits", "PromptFit", "Runner", "RunnerFactory", "Scheduler", "Waiter"]


# A prompt found once the request has a runner: given "does this text fit the context?", the text.
PromptFit = Callable[[Callable[[str], Awaitable[bool]]], Awaitable[str]]


class Scheduler:
    def __init__(self, settings: Settings, gpus: list[Gpu] | None = None,
                 runner_factory: RunnerFactory = RunnerHandle) -> None:
        """`gpus` and `runner_factory` are for tests: a simulated device inventory, a fake runner."""
        self.settings = settings
        self.budget = system_budget(settings.memory_limit)
        gpus = gpu_inventory() if gpus is None and settings.cuda is not False else (gpus or [])
        self.pools: dict[Pool, int] = {CPU: self.budget, **{Pool(g.index): g.budget for g in gpus}}
        self.max_loaded = settings.max_loaded_models or 3 * max(len(gpus), 1)
        self.placement = Pools(self.pools, self.max_loaded)
        self.waiters: deque[Waiter] = deque()  # in arrival order; self.policy orders service
        self.policy = FairQueue()
        self.predictor = Predictor()
        self.running: dict[Waiter, Runner] = {}  # requests holding a slot, and where
        self.eviction = Eviction(settings, self.placement, self.predictor)
        self.order = ServiceOrder(self.policy)
        self.reserve = Reserve(settings.interactive_reserve)  # the interactive lane's slot
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._draining = False
        self._watchdog: asyncio.Task | None = None
        roster = Roster()  # the fleet's runners (shared, never rebound), as /api/ps and the tests read them
        self.runners, self.restarts, self.retired = roster.runners, roster.restarts, roster.retired
        self.metrics = Metrics(self.snapshot)
        self.bus = bus.Bus()  # the live view's events (api/events.py serves them)
        self.fleet = Fleet(settings, self.pools, self.placement, self.eviction, self.predictor, self.metrics,
                           self.bus, runner_factory, roster, self.waiters, self._kick, self._spawn,
                           lambda: not (self._closed or self._draining))

    # -- admission ----------------------------------------------------------------------------
    def check_fits(self, spec: ModelSpec) -> None:
        self.fleet.check_fits(spec)

    def drain(self) -> None:
        """Refuse new requests (503); admitted ones still run. Shutdown's first step."""
        self._draining = True
        self.bus.closed = True

    def admit(self, spec: ModelSpec, keep_alive: float, ticket: Ticket = DEFAULT_TICKET) -> Waiter:
        """Queue a request now, or raise Busy/TenantBusy/DeadlineUnmeetable/NeverFits at once
        (before any response starts)."""
        if self._closed or self._draining:
            raise Busy("server is shutting down")
        tenant = ticket.tenant
        if not tenant.allows(spec.name):
            raise ModelNotAllowed(f"this API key may not use model '{spec.name}'")
        self.check_fits(spec)
        waiter = Waiter(spec, keep_alive, asyncio.get_running_loop().create_future(), ticket=ticket)
        self.eviction.demand.note(spec.name, waiter.enqueued)
        self.policy.arrive(waiter, self.waiters)
        self.reserve.saw(waiter)
        held = self.reserve.held_for(waiter, waiter.enqueued)
        if (would_queue(spec, self.waiters, self.runners, held) or self.policy.at_limit(waiter)) and (refusal := (
                self.policy.refusal(ticket, self.waiters, self.queued(), self.settings.max_queue)
                or self._late(waiter))):
            self.metrics.refused(tenant.name, refusal.status)
            self.bus.publish(bus.RequestRefused(**about(waiter), status=refusal.status, message=str(refusal)))
            raise refusal
        self.waiters.append(waiter)
        self._notify_positions(spec.name)  # it may go ahead of others (a lane, a fair share)
        waits = self.queued(spec.name) > 0  # else the slot (or the load) is its at once
        self.bus.publish(bus.RequestAdmitted(**about(waiter), position=self.position(waiter) if waits else 0))
        if self._watchdog is None:
            self._watchdog = asyncio.ensure_future(watch(
                self.runners, self.settings.stall_timeout, lambda r, why: self._spawn(r.handle.kill(why)),
                lambda: self._closed))
        self._kick()
        return waiter

    def _late(self, waiter: Waiter) -> CorralError | None:
        """Why a request that must wait cannot make its deadline, if it cannot (deadlines.py)."""
        if waiter.ticket.deadline is None:
            return None
        queue = self.policy.order([w for w in self.waiters if w.model == waiter.model] + [waiter])
        return deadline_refusal(self.etas(queue).get(waiter), waiter.ticket.deadline)

    def etas(self, queue: Sequence[Waiter]) -> dict[Waiter, float]:
        """Predicted seconds until each of one model's waiters (in service order) starts (eta.py)."""
        now = time.monotonic()
        held = self.reserve.held(queue[0].spec, now) if queue else 0
        return plan(queue, self.runners, self.running, self.predictor, now, held)

    def queue_of(self, model: str) -> list[Waiter]:
        """The requests waiting for a model, in service order."""
        return self.order.of(model, self.waiters)

    def queued(self, name: str | None = None) -> int:
        now = time.monotonic()
        return queued(self.waiters, self.runners, name, lambda spec: self.reserve.held(spec, now))

    def position(self, waiter: Waiter) -> int:
        """1-based place among the requests waiting for the same model, in service order; 0
        once placed."""
        queue = self.queue_of(waiter.model)
        return queue.index(waiter) + 1 if waiter in queue else 0

    def _forget(self, waiter: Waiter) -> None:
        """A request leaves before it ran: drop it from the queue, or hand back its slot."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self.order.clear()
            self._notify_positions(waiter.spec.name)
        elif waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
            self._finish(waiter, waiter.future.result(), 0)
        if not waiter.future.done():
            waiter.future.cancel()
        self._kick()

    def _finish(self, waiter: Waiter, runner: Runner, tokens: int) -> None:
        """A placed request is over, having generated `tokens`: settle its tenant's share and
        free its slot."""
        self.policy.finished(waiter, tokens)
        self.running.pop(waiter, None)
        self.predictor.finished(waiter, time.monotonic())
        self.metrics.tenant_tokens.labels(waiter.ticket.tenant.name).inc(tokens)
        self.release(runner, waiter.keep_alive)

    def release(self, runner: Runner, keep_alive: float) -> None:
        runner.busy -= 1
        runner.last_used = time.monotonic()
        runner.keep_alive = keep_alive
        if runner.busy == 0:
            self.fleet.arm_expiry(runner)
        self._kick()

    def generate(self, waiter: Waiter, prompt: str | PromptFit, options: GenerationOptions,
                 context: list[int] | None = None, want_context: bool = False) -> AsyncIterator[Event]:
        """Generate; `context` and `want_context` as in runner.protocol.Submit."""
        waiter.limit = max(options.num_predict, 0)
        async def work(runner: Runner) -> AsyncIterator[Reply]:
            n_ctx = waiter.spec.n_ctx
            text = prompt if isinstance(prompt, str) else await prompt(lambda t: runner.handle.fits(t, n_ctx))
            async for reply in runner.handle.stream(text, options, n_ctx, context, want_context):
                yield reply

        return self._serve(waiter, work)

    def embed(self, waiter: Waiter, inputs: list[str], truncate: bool) -> AsyncIterator[Event]:
        return self._serve(waiter, lambda runner: runner.handle.embed(inputs, truncate, waiter.spec.n_ctx))

    async def _serve(self, waiter: Waiter, work: Callable[[Runner], AsyncIterator[Reply]]) -> AsyncIterator[Event]:
        """_run, and the live view's account of how the request ended."""
        trace, run = self.bus.trace(waiter), self._run(waiter, work)
        try:
            async for event in run:
                trace.saw(event)
                yield event
        finally:
            await run.aclose()  # its own cleanup first (slot, queue), then the report
            self.bus.publish(trace.finished())

    async def _run(self, waiter: Waiter, work: Callable[[Runner], AsyncIterator[Reply]]) -> AsyncGenerator[Event]:
        """Run an admitted request: Queued events while it waits, then its Text/Embedding events
        and a Done, or a Failed.

        However the consumer stops (disconnect, cancel), the request leaves the queue or frees
        its slot.
        """
        runner: Runner | None = None
        tokens = seen = shown = 0
        deadline = waiter.ticket.deadline
        try:
            while not waiter.future.done():
                if (pos := self.position(waiter)) > 0 and pos != shown:
                    yield Queued(pos, self.etas(self.queue_of(waiter.model)).get(waiter))
                    shown = pos
                waiter.position_changed.clear()
                changed = asyncio.ensure_future(waiter.position_changed.wait())
                left = None if deadline is None else deadline - time.monotonic()
                try:
                    await asyncio.wait([waiter.future, changed], timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if deadline is not None and time.monotonic() >= deadline and not waiter.future.done():
                    yield queue_expired(waiter.enqueued)
                    return
            if waiter.future.cancelled():
                yield Failed(500, "request cancelled")
                return
            exc = waiter.future.exception()
            if exc is not None:
                yield Failed(exc.status if isinstance(exc, CorralError) else 500, str(exc))
                return
            runner = waiter.future.result()
            queued_s = time.monotonic() - waiter.enqueued
            timing = self.metrics.request(waiter.spec.name, waiter.enqueued, queued_s)
            async for reply in within(deadline, work(runner)):
                if isinstance(reply, Expired):  # it ran out of time: it ends as a generation ends
                    event: Event = cut_short(seen, waiter.started, queued_s, waiter.load_wait(runner))
                else:
                    event = from_reply(reply, queued_s, waiter.load_wait(runner))
                    seen += isinstance(event, Text)
                    waiter.progressed(seen)
                timing.saw(event)
                if isinstance(event, Done):
                    tokens = event.eval_count or event.prompt_eval_count
                yield event
                if isinstance(event, (Done, Failed)):
                    break
        except RunnerError as exc:
            yield Failed(exc.status, str(exc))
        finally:
            if runner is not None:
                self._finish(waiter, runner, tokens)
            else:
                self._forget(waiter)

    async def warm(self, waiter: Waiter) -> float:
        """Wait for a slot (loading the model if needed) and hand it straight back.

        Ollama's "empty prompt loads the model". Returns the load time it waited for.
        """
        runner: Runner | None = None
        try:
            runner = await waiter.future
            return waiter.load_wait(runner)
        finally:
            if runner is not None:
                self._finish(waiter, runner, 0)
            else:
                self._forget(waiter)

    # -- placement ----------------------------------------------------------------------------
    def _kick(self) -> None:
        """Match waiters to runners; start loads and evictions. Called on every state change."""
        if self._closed:
            return
        self.order.clear()
        for waiter in [w for w in self.waiters if w.future.done()]:
            self.waiters.remove(waiter)
        moved = set()
        draining, due = self.eviction.draining(self.runners, self.waiters)  # they give way to a waiting model
        if due is not None:
            self.fleet.rekick.within(due)
        # Models in the order of their most urgent, oldest waiter (who gets memory first).
        models = sorted({w.model for w in self.waiters}, key=lambda m: min(
            (w.ticket.lane.rank, w.enqueued) for w in self.waiters if w.model == m))
        for name in models:
            # Within a model, the policy's next waiter only: if it cannot start, the others wait.
            while (head := self.policy.next([w for w in self.waiters if w.model == name])) is not None:
                runner = self._runner_for(head.spec)
                if runner in draining:
                    break
                if not (runner and runner.has_free_slot and self.reserve.admits(head, runner, time.monotonic())):
                    if runner is None and not any(r.spec.name == name and r.state == RunnerState.LOADING
                                                  for r in self.runners):
                        self._place(head)
                    break
                runner.busy += 1
                runner.expires_at = 0.0
                runner.cancel_timer()
                self.waiters.remove(head)
                self.policy.started(head)
                head.started = time.monotonic()
                self.metrics.tenant_started.labels(head.ticket.tenant.name, head.ticket.lane.value).inc()
                self.running[head] = runner
                head.future.set_result(runner)
                self.bus.publish(bus.RequestStarted(**about(head), queue_s=head.started - head.enqueued))
                moved.add(name)
        for name in moved:
            self._notify_positions(name)
        rebalance(self.runners, self.settings.threads, self.fleet.threads_for)

    def _runner_for(self, spec: ModelSpec) -> Runner | None:
        candidates = [r for r in self.runners if r.serves(spec)]
        # Prefer one with a free slot; then any (the waiter will get its next free slot).
        candidates.sort(key=lambda r: not r.has_free_slot)
        return candidates[0] if candidates else None

    def _place(self, waiter: Waiter) -> None:
        self.fleet.start(waiter.spec, waiter.keep_alive, waiter)

    def snapshot(self) -> Snapshot:
        """A frozen view of runners, queues, memory and counters (see snapshot.py)."""
        return take_snapshot(self.runners, self.waiters, self.retired, self.restarts, self.health,
                             self.policy.running_by_tenant, self.queue_of, self.etas,
                             budget=self.budget, reserved=self.reserved(),
                             pools={str(pool): budget for pool, budget in self.pools.items()},
                             held=lambda spec: self.reserve.held(spec, time.monotonic()))

    def reserved(self, pool: Pool | None = None) -> int:
        return Pools.reserved(self.runners, pool)

    def _notify_positions(self, name: str) -> None:
        for w in self.waiters:
            if w.spec.name == name:
                w.position_changed.set()

    def unload(self, name: str) -> bool:
        """Unload a model now if idle, else as soon as it goes idle (keep_alive 0)."""
        return self.fleet.unload(name)

    def health(self, runner: Runner) -> str:
        return health(runner, self.settings.stall_timeout)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._watchdog:
            self._watchdog.cancel()
        for w in list(self.waiters):
            if not w.future.done():
                w.future.set_exception(RunnerError("server is shutting down"))
        self.waiters.clear()
        await self.fleet.stop_all()

