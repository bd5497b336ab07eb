"""The runner processes: which exist, where a new one loads (evicting idle ones for a waiter),
keep-alive expiry, unloading, and a runner that exits under us (a crash, the watchdog's kill).

The scheduler decides *who* runs; the fleet decides *which processes* exist. It shares the
scheduler's waiting list (a waiter asks for a load; its model's waiters fail with a failed load)
and calls `kick` after every change that may let a waiter start.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from corral.config import FOREVER, Settings
from corral.models.store import kv_cache_dir
from corral.runner import protocol as p
from corral.runner.handle import RunnerError, RunnerHandle
from corral.runner.protocol import LoadConfig
from corral.scheduler import bus
from corral.scheduler.bus import UnloadReason
from corral.scheduler.eta import Predictor
from corral.scheduler.eviction import Alarm, Eviction
from corral.scheduler.memory import CPU, Pool
from corral.scheduler.metrics import Metrics
from corral.scheduler.placement import Pools
from corral.scheduler.state import ModelSpec, NeverFits, Runner, RunnerState, Waiter

RunnerFactory = Callable[[LoadConfig, Callable[[RunnerHandle], None]], RunnerHandle]


@dataclass
class Roster:
    """The runners that exist and the account of those gone: what snapshots read, so it exists
    before the metrics registry (which reads a snapshot when it is built) and the fleet."""

    runners: list[Runner] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)  # model → runners lost to a stall or a crash
    retired: dict[str, p.Stats] = field(default_factory=dict)  # model → counters of its runners now gone


class Fleet:
    def __init__(self, settings: Settings, pools: dict[Pool, int], placement: Pools, eviction: Eviction,
                 predictor: Predictor, metrics: Metrics, events: bus.Bus, runner_factory: RunnerFactory,
                 roster: Roster, waiters: deque[Waiter], kick: Callable[[], None],
                 spawn: Callable[[Coroutine[Any, Any, object]], None], accepting: Callable[[], bool]) -> None:
        self.settings = settings
        self.pools = pools
        self.placement = placement
        self.eviction = eviction
        self.predictor = predictor
        self.metrics = metrics
        self.bus = events
        self.runner_factory = runner_factory
        self.waiters = waiters  # the scheduler's own list, shared
        self.kick = kick
        self.spawn = spawn
        self.accepting = accepting  # False once the server drains or closes: no restarts then
        self.rekick = Alarm(kick)  # a swap window's end
        self.runners = roster.runners
        self.restarts = roster.restarts
        self.retired = roster.retired

    def threads_for(self, spec: ModelSpec) -> int:
        """The threads a runner of this spec is started with (0 in a spec: the server's default)."""
        return spec.n_threads or self.settings.threads

    def check_fits(self, spec: ModelSpec) -> None:
        need = spec.estimate().total
        largest = max(self.pools[p] for p in self.placement.for_spec(spec))
        if need > largest:
            raise NeverFits(f"model '{spec.name}' needs an estimated {need / 2**20:.0f} MiB, more than "
                            f"corral's whole memory budget of {largest / 2**20:.0f} MiB")
        if conflict := self.eviction.pin_conflict(spec, self.runners):
            raise conflict

    # -- loading --------------------------------------------------------------------------------
    def start(self, spec: ModelSpec, keep_alive: float, waiter: Waiter | None = None) -> None:
        """Load a runner for `spec` where it fits, evicting idle runners for `waiter` if that makes
        room and eviction.py allows it now."""
        same_model = [r for r in self.runners if r.spec.name == spec.name and r.state != RunnerState.UNLOADING]
        if same_model:
            # A runner of this model with other load options: reload once it is idle.
            for r in same_model:
                if r.idle:
                    self.unload_runner(r, UnloadReason.RELOAD, "to load it with other options")
            return
        try:
            self.check_fits(spec)
        except NeverFits as exc:
            self.fail_waiters(spec, exc)
            return
        need = spec.estimate()
        # A model goes wholly into one pool, no partial offload: free VRAM on some GPU, else VRAM
        # freed by evicting idle GPU models, else system RAM (free, then freed by eviction).
        gpus = [p for p in self.placement.for_spec(spec) if p != CPU]
        wanted = {w.spec.name for w in self.waiters}
        retry: float | None = None
        for group in (gpus, [CPU]):
            for pool in group:
                if self.placement.fits(self.runners, pool, need.total):
                    runner = Runner(spec, self._new_handle(spec, pool), need, pool=pool,
                                    keep_alive=keep_alive)
                    self.runners.append(runner)
                    self.bus.publish(bus.ModelLoading(model=spec.name, device=str(pool), estimate=need.total))
                    self.spawn(self._load(runner))
                    return
            if waiter is None or not group:
                continue
            evict, retry = self.eviction.victims(self.runners, waiter, wanted, group)
            for r in evict:
                self.unload_runner(r, UnloadReason.EVICTED, f"to make room for {spec.name} on {r.pool}")
            if evict or retry is not None:
                break  # room frees when those runners have exited (kick runs again then), or later
        if retry is not None:
            self.rekick.within(retry)
        # Otherwise it waits (counted in the queue) until a busy runner goes idle.

    def _new_handle(self, spec: ModelSpec, pool: Pool) -> RunnerHandle:
        on_gpu = pool.is_gpu
        cfg = LoadConfig(model_path=str(spec.info.path), n_slots=spec.n_slots, n_ctx_slot=spec.n_ctx,
                         n_threads=self.threads_for(spec), n_gpu_layers=spec.n_gpu_layers if on_gpu else 0,
                         main_gpu=pool.gpu or 0, prompt_cache_bytes=spec.prompt_cache_bytes,
                         max_step_s=self.settings.stall_timeout, cache_dir_bytes=self.settings.cache_dir_bytes,
                         cache_dir=str(self.settings.cache_dir or kv_cache_dir(self.settings.models_dir)),
                         speculative=self.settings.speculative, draft_max=self.settings.draft_max,
                         draft_model_path=str(spec.draft.path) if spec.draft else "",
                         stream_interval_s=self.settings.stream_interval,
                         exact=spec.exact, flash_attention=spec.flash_attention, kv_type=spec.kv_type.value)
        return self.runner_factory(cfg, self._runner_exited)

    async def _load(self, runner: Runner) -> None:
        started = time.monotonic()
        try:
            await runner.handle.start(self.settings.load_timeout)
        except (RunnerError, OSError) as exc:
            if runner in self.runners:
                self.runners.remove(runner)
            self.bus.publish(bus.ModelCrashed(model=runner.spec.name, device=str(runner.pool), reason="load",
                                              detail=str(exc)))
            self.fail_waiters(runner.spec, exc)
            self.kick()
            return
        runner.ready_at = time.monotonic()
        runner.load_duration = runner.ready_at - started
        self.predictor.loaded(runner.spec.name, runner.load_duration)
        self.metrics.loads.labels(runner.spec.name).inc()
        runner.rss = runner.handle.rss()
        runner.last_used = time.monotonic()
        if runner.state == RunnerState.LOADING:
            runner.state = RunnerState.READY
        runner.threads = self.threads_for(runner.spec)
        runner.loaded.set()
        self.bus.publish(bus.ModelLoaded(model=runner.spec.name, device=str(runner.pool),
                                         load_s=runner.load_duration, measured=runner.rss))
        self.kick()
        if runner.idle:
            self.arm_expiry(runner)

    def fail_waiters(self, spec: ModelSpec, exc: Exception) -> None:
        for w in [w for w in self.waiters if w.spec.served_by(spec)]:
            self.waiters.remove(w)
            if not w.future.done():
                w.future.set_exception(RunnerError(str(exc)) if not isinstance(exc, NeverFits) else exc)

    # -- keep-alive and unloading -------------------------------------------------------------
    def arm_expiry(self, runner: Runner) -> None:
        runner.cancel_timer()
        if runner.keep_alive == FOREVER or self.eviction.pinned(runner.spec.name):
            runner.expires_at = FOREVER
            return
        runner.expires_at = time.time() + runner.keep_alive
        if any(w.spec.served_by(runner.spec) for w in self.waiters):
            return
        if runner.keep_alive <= 0:
            self.unload_runner(runner, UnloadReason.REQUESTED)
        else:
            runner.timer = asyncio.get_running_loop().call_later(runner.keep_alive, self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.timer = None
        if runner.idle and runner in self.runners:
            self.unload_runner(runner, UnloadReason.EXPIRED, f"keep_alive {runner.keep_alive:g}s ran out")

    def unload_runner(self, runner: Runner, reason: UnloadReason, detail: str = "") -> None:
        if runner.state == RunnerState.UNLOADING:
            return
        runner.state = RunnerState.UNLOADING
        self.bus.publish(bus.ModelUnloaded(model=runner.spec.name, device=str(runner.pool), reason=reason,
                                           detail=detail))
        runner.cancel_timer()

        async def stop() -> None:
            await runner.handle.stop()
            self._drop(runner)

        self.spawn(stop())

    def unload(self, name: str) -> bool:
        """Unload a model now if idle, else as soon as it goes idle (keep_alive 0)."""
        found = False
        for runner in [r for r in self.runners if r.spec.name == name]:
            found = True
            if self.eviction.pinned(name):
                continue
            runner.keep_alive = 0
            if runner.idle:
                self.unload_runner(runner, UnloadReason.REQUESTED)
        return found

    def _runner_exited(self, handle: RunnerHandle) -> None:
        for runner in [r for r in self.runners if r.handle is handle]:
            if runner.state != RunnerState.UNLOADING:  # it died under us: a crash, or the watchdog's kill
                self.restarts[runner.spec.name] = self.restarts.get(runner.spec.name, 0) + 1
                why = "stall" if runner.stalled else "crash"
                self.metrics.runner_restarts.labels(runner.spec.name, why).inc()
                self.bus.publish(bus.ModelCrashed(model=runner.spec.name, device=str(runner.pool), reason=why,
                                              detail=runner.handle.kill_reason))
            self._drop(runner)
            # A stalled runner is restarted at once, so the model is back before the next request
            # needs it; requests still queued for it are served by this new runner.
            if (runner.stalled and self.accepting()
                    and not any(r.spec.name == runner.spec.name for r in self.runners)):
                self.start(runner.spec, runner.keep_alive)
                self.kick()

    def _drop(self, runner: Runner) -> None:
        if runner in self.runners:
            self.runners.remove(runner)
            # Runner-wide time counters stay monotonic per model when a runner goes.
            gone = self.retired.get(runner.spec.name, p.Stats(0, 0))
            stats = runner.handle.stats
            self.retired[runner.spec.name] = gone + stats
            runner.cancel_timer()
            self.kick()

    async def stop_all(self) -> None:
        await asyncio.gather(*(r.handle.stop() for r in list(self.runners)), return_exceptions=True)
        self.runners.clear()
