"""Memory pools: where a model's footprint fits, and which of some runners to unload to make it
fit (eviction.py decides which may go, in which order). Pure bookkeeping; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from corral.scheduler.memory import CPU, Pool
from corral.scheduler.state import ModelSpec, Runner


@dataclass
class Pools:
    """Budgets in bytes by pool (system RAM, each GPU) and the loaded-model cap."""

    budgets: dict[Pool, int]
    max_loaded: int

    def for_spec(self, spec: ModelSpec) -> list[Pool]:
        """Pools a model may go to, GPUs first (none when it asks for the CPU)."""
        gpus = [p for p in self.budgets if p != CPU] if spec.n_gpu_layers else []
        return gpus + [CPU]

    @staticmethod
    def reserved(runners: list[Runner], pool: Pool | None = None) -> int:
        return sum(r.estimate.total for r in runners if pool is None or r.pool == pool)

    def fits(self, runners: list[Runner], pool: Pool, need: int, freed: int = 0, evicted: int = 0) -> bool:
        return (self.reserved(runners, pool) - freed + need <= self.budgets[pool]
                and len(runners) - evicted < self.max_loaded)

    def evictions(self, runners: list[Runner], pool: Pool, need: int, candidates: list[Runner]) -> list[Runner]:
        """The first of `candidates` (in order) to unload so that `need` fits in `pool`; empty when
        unloading all of them would not be enough."""
        chosen: list[Runner] = []
        freed = 0
        for r in candidates:
            if self.fits(runners, pool, need, freed, len(chosen)):
                break
            # Another pool's runner frees no memory here, only a place under the loaded-model cap.
            if r.pool == pool or len(runners) - len(chosen) >= self.max_loaded:
                chosen.append(r)
                freed += r.estimate.total if r.pool == pool else 0
        return chosen if chosen and self.fits(runners, pool, need, freed, len(chosen)) else []
