"""One frozen view of the scheduler: what /api/ps, /metrics and `corral ps` show (and, next, a
live page and a cluster router). Readers get values, never the scheduler's live objects."""

from __future__ import annotations

from dataclasses import dataclass

from corral.models.gguf_info import GGUFInfo


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


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """Per model, over its runners past and present."""

    running: int
    waiting: int
    decode_s: float  # time inside llama_decode
    busy_s: float  # time runner loops had work
    reused_tokens: int  # prompt tokens reused from a slot's KV or the prompt cache
    cache_restores: int  # prompt-cache entries restored


@dataclass(frozen=True, slots=True)
class Snapshot:
    runners: tuple[RunnerView, ...]
    models: dict[str, ModelTotals]
    budget: int  # bytes corral may fill with models (system RAM)
    reserved: int  # bytes reserved by loaded models' estimates
    pools: dict[str, int]  # pool name → budget in bytes
