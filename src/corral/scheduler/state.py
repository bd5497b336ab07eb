"""Plain data the scheduler works with: a model spec, a loaded runner, a waiting request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum

from corral.errors import Forbidden, InsufficientStorage, TooManyRequests, Unavailable
from corral.models.gguf_info import GGUFInfo
from corral.runner.handle import RunnerHandle
from corral.runner.kernels import KvType
from corral.scheduler.memory import CPU, Estimate, Pool, estimate
from corral.scheduler.tenants import DEFAULT_TICKET, Ticket


class RunnerState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"


class Busy(Unavailable):
    """The queue is full, or the server is stopping."""


class TenantBusy(TooManyRequests):
    """A tenant has as many requests waiting as its keys file entry allows."""


class ModelNotAllowed(Forbidden):
    """The request's key may not use this model."""


class NeverFits(InsufficientStorage):
    """The model needs more memory than the whole budget: it can never be loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """A model and the load-time options a runner is built with."""

    name: str
    digest: str
    info: GGUFInfo
    n_ctx: int  # per slot
    n_slots: int
    n_gpu_layers: int = 0
    n_threads: int = 0  # 0: the server's default (Settings.threads)
    prompt_cache_bytes: int = 0
    # Kernels (runner/kernels.py): exact (batch-invariant) or fast, flash attention, KV cache type.
    exact: bool = False
    flash_attention: bool | None = None
    kv_type: KvType = KvType.F16
    draft: GGUFInfo | None = None  # the manifest's draft model (speculative decoding)

    def estimate(self) -> Estimate:
        return estimate(self.info, self.n_ctx, self.n_slots, prompt_cache=self.prompt_cache_bytes,
                        kv_bytes_per_value=self.kv_type.bytes_per_value, draft=self.draft)

    def served_by(self, other: ModelSpec) -> bool:
        """Can a runner built for `other` serve this request?

        A runner with a larger context serves a request asking for less (the engine caps the
        request to its own num_ctx). This is the anti-thrashing rule: two clients alternating
        num_ctx values cause at most one reload, to the larger, never a reload per request.
        The kernels must match: an exact request is not served by a fast runner, nor the reverse.
        """
        return (self.name == other.name and self.digest == other.digest and self.n_slots == other.n_slots
                and self.n_gpu_layers == other.n_gpu_layers and self.n_threads == other.n_threads
                and self.exact == other.exact and self.flash_attention == other.flash_attention
                and self.kv_type == other.kv_type and self.n_ctx <= other.n_ctx)


@dataclass(eq=False)
class Runner:
    spec: ModelSpec
    handle: RunnerHandle
    estimate: Estimate
    pool: Pool = CPU  # where its memory lives
    state: RunnerState = RunnerState.LOADING
    busy: int = 0  # requests holding a slot
    threads: int = 0  # CPU threads it uses now (scheduler/threads.py); 0 until loaded
    keep_alive: float = 300.0
    expires_at: float = 0.0  # wall clock; 0 while busy
    last_used: float = 0.0
    load_duration: float = 0.0
    ready_at: float = 0.0  # monotonic
    rss: int = 0
    stalled: bool = False  # the watchdog killed it for making no progress
    created: float = field(default_factory=time.monotonic)  # when its load began
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        if self.timer:
            self.timer.cancel()
            self.timer = None

    @property
    def idle(self) -> bool:
        return self.state == RunnerState.READY and self.busy == 0

    @property
    def has_free_slot(self) -> bool:
        return self.state == RunnerState.READY and self.busy < self.spec.n_slots

    def serves(self, spec: ModelSpec) -> bool:
        """Can this runner take a request for `spec` (now or once a slot frees)?"""
        return self.state != RunnerState.UNLOADING and spec.served_by(self.spec)


@dataclass(eq=False)
class Waiter:
    spec: ModelSpec
    keep_alive: float
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)
    position_changed: asyncio.Event = field(default_factory=asyncio.Event)
    ticket: Ticket = DEFAULT_TICKET
    started: float = 0.0  # monotonic: when it took a slot
    limit: int = 0  # most tokens it may generate (num_predict); 0: up to its context
    generated: int = 0  # pieces of text streamed so far
    first_token: float = 0.0  # monotonic: when the first of them came

    @property
    def model(self) -> str:
        return self.spec.name

    def progressed(self, generated: int) -> None:
        """It has streamed `generated` pieces (what eta.py measures)."""
        if generated and not self.generated:
            self.first_token = time.monotonic()
        self.generated = generated

    def load_wait(self, runner: Runner) -> float:
        """The load time it waited for: its runner's, if that became ready after it came."""
        return runner.load_duration if runner.ready_at >= self.enqueued else 0.0
