"""Memory pools and eviction choice: where a model's footprint fits, and which idle runners to
unload to make it fit. Pure bookkeeping over the scheduler's runners; no I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass

from corral.config import FOREVER
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

    def evictions(self, runners: list[Runner], pool: Pool, need: int, wanted: set[str]) -> list[Runner]:
        """Idle runners to unload so that `need` fits in `pool` (shortest keep-alive left, then
        least recently used; never a model a waiter wants); empty when that would not be enough."""
        idle = [r for r in runners if r.idle and r.spec.name not in wanted]
        idle.sort(key=lambda r: (remaining_keep_alive(r), r.last_used))
        chosen: list[Runner] = []
        freed = 0
        for r in idle:
            if self.fits(runners, pool, need, freed, len(chosen)):
                break
            # Another pool's runner frees no memory here, only a place under the loaded-model cap.
            if r.pool == pool or len(runners) - len(chosen) >= self.max_loaded:
                chosen.append(r)
                freed += r.estimate.total if r.pool == pool else 0
        return chosen if chosen and self.fits(runners, pool, need, freed, len(chosen)) else []


def remaining_keep_alive(runner: Runner) -> float:
    if runner.keep_alive == FOREVER:
        return FOREVER
    return max(runner.last_used + runner.keep_alive - time.monotonic(), 0.0)
