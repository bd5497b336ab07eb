"""One frozen view of the scheduler: what /api/ps, /metrics and `corral ps` show (and, next, a
live page and a cluster router). Readers get values, never the scheduler's live objects."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from corral.models.gguf_info import GGUFInfo
from corral.runner import protocol as p
from corral.scheduler.state import ModelSpec, Runner, Waiter


@dataclass(frozen=True, slots=True)
class RunnerView:
    name: str
    digest: str
    info: GGUFInfo
    state: str  # loading | ready | unloading
    health: str  # ok | unresponsive
    context_length: int  # per slot
    slots_busy: int
    slots_total: int
    slots_reserved: int  # of slots_total, kept free for the interactive lane now (reserve.py)
    queued: int  # requests waiting for this model
    size: int  # estimated bytes
    size_measured: int  # the process's resident bytes
    pid: int | None
    device: str  # "cpu" or "gpuN"
    on_gpu: bool
    threads: int
    restarts: int
    keep_alive: float  # seconds; FOREVER for ever
    expires_at: float  # wall clock; 0 while busy
    silent_s: float  # seconds with work and no progress
    exact: bool  # batch-invariant kernels (runner/kernels.py), else fast
    kv_type: str  # the KV cache's type: f16 | q8_0 | q4_0


@dataclass(frozen=True, slots=True)
class QueuedView:
    """One waiting request, as a model's queue shows it."""

    position: int  # 1-based, in service order
    eta_s: float | None  # predicted start, seconds from the snapshot (eta.py)
    waited_s: float
    tenant: str
    lane: str


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """Per model, over its runners past and present."""

    running: int
    waiting: int
    decode_s: float  # time inside llama_decode
    busy_s: float  # time runner loops had work
    reused_tokens: int  # prompt tokens reused from a slot's KV or the prompt cache
    cache_restores: int  # prompt-cache entries restored
    evaluated_tokens: int  # prompt tokens decoded
    disk_restores: int  # prompt-cache entries read back from disk when a runner loaded
    queue: tuple[QueuedView, ...] = ()  # its waiting requests, in service order
    drafted_tokens: int = 0  # speculative decoding: tokens drafted, and those accepted
    accepted_tokens: int = 0
    slot_moves: int = 0  # requests moved to another slot (the runner's packing)


@dataclass(frozen=True, slots=True)
class TenantTotals:
    running: int  # requests holding a slot, all models
    waiting: int


@dataclass(frozen=True, slots=True)
class QueueView:
    """One waiting request (the live view's queue panel)."""

    model: str
    tenant: str
    lane: str
    position: int  # 1-based among its model's waiters, in service order
    waited_s: float
    eta_s: float | None  # predicted start (eta.py)


@dataclass(frozen=True, slots=True)
class Snapshot:
    runners: tuple[RunnerView, ...]
    models: dict[str, ModelTotals]
    tenants: dict[str, TenantTotals]
    budget: int  # bytes corral may fill with models (system RAM)
    reserved: int  # bytes reserved by loaded models' estimates
    pools: dict[str, int]  # pool name → budget in bytes
    queue: tuple[QueueView, ...] = ()


def take_snapshot(runners: list[Runner], waiters: Iterable[Waiter], retired: Mapping[str, p.Stats],
                  restarts: Mapping[str, int], health: Callable[[Runner], str], running: Mapping[str, int],
                  queues: Callable[[str], Sequence[Waiter]],
                  etas: Callable[[Sequence[Waiter]], Mapping[Waiter, float]],
                  *, budget: int, reserved: int, pools: dict[str, int],
                  held: Callable[[ModelSpec], int] = lambda spec: 0) -> Snapshot:
    """The scheduler's state as values: `retired` holds the counters of runners that are gone,
    `running` each tenant's requests holding a slot, `queues` a model's waiters in service order
    and `etas` their predicted starts; `held` the slots a model's runners keep for the interactive lane."""
    waiting = list(waiters)
    now = time.monotonic()
    views = tuple(RunnerView(
        name=r.spec.name, digest=r.spec.digest, info=r.spec.info, state=r.state.value, health=health(r),
        context_length=r.spec.n_ctx, slots_busy=r.busy, slots_total=r.spec.n_slots,
        slots_reserved=held(r.spec),
        queued=sum(1 for w in waiting if w.spec.name == r.spec.name), size=r.estimate.total,
        size_measured=r.handle.rss(), pid=r.handle.pid, device=str(r.pool), on_gpu=r.pool.is_gpu,
        threads=r.threads, restarts=restarts.get(r.spec.name, 0), keep_alive=r.keep_alive,
        expires_at=r.expires_at, silent_s=r.handle.silent_for(), exact=r.spec.exact,
        kv_type=r.spec.kv_type.value) for r in runners)
    models = {}
    for name in sorted({r.spec.name for r in runners} | {w.spec.name for w in waiting} | set(retired)):
        mine = [r for r in runners if r.spec.name == name]
        total = sum((r.handle.stats for r in mine), retired.get(name, p.Stats(0, 0)))
        queue = queues(name)
        eta = etas(queue)
        models[name] = ModelTotals(
            running=sum(r.busy for r in mine), waiting=sum(1 for w in waiting if w.spec.name == name),
            decode_s=total.decode_ns / 1e9, busy_s=total.busy_ns / 1e9,
            reused_tokens=total.reused_tokens, cache_restores=total.cache_restores,
            evaluated_tokens=total.evaluated_tokens, disk_restores=total.disk_restores,
            drafted_tokens=total.drafted_tokens, accepted_tokens=total.accepted_tokens, slot_moves=total.slot_moves,
            queue=tuple(QueuedView(i, eta.get(w), now - w.enqueued, w.ticket.tenant.name, w.ticket.lane.value)
                        for i, w in enumerate(queue, 1)))
    tenants = {name: TenantTotals(running.get(name, 0), sum(1 for w in waiting if w.ticket.tenant.name == name))
               for name in sorted({w.ticket.tenant.name for w in waiting} | set(running))}
    flat = tuple(QueueView(name, q.tenant, q.lane, q.position, q.waited_s, q.eta_s)
                 for name, totals in models.items() for q in totals.queue)
    return Snapshot(runners=views, models=models, tenants=tenants, budget=budget, reserved=reserved, pools=pools,
                    queue=flat)
