"""How the CPU threads are shared among the runners that are generating at once.

llama.cpp's CPU threads spin at a barrier after every op of the graph, so a runner whose thread
is descheduled stalls its partner threads. Two busy runners using all cores each (4 threads on
2 cores) ran at about a quarter of one runner's speed together. Each busy runner therefore gets
an equal part of the threads; an idle runner keeps its count until it is busy again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corral.scheduler.memory import CPU
from corral.scheduler.state import ModelSpec, Runner, RunnerState


def rebalance(runners: Sequence[Runner], total: int, cap: Callable[[ModelSpec], int]) -> None:
    """Split `total` threads among the CPU runners holding requests (`cap`: the threads a spec's
    runner was started with); a `threads` message to each runner whose share changed."""
    busy = [r for r in runners if r.pool == CPU and r.state == RunnerState.READY and r.busy]
    for runner, n in zip(busy, share_threads(total, [cap(r.spec) for r in busy])):
        if runner.threads != n:
            runner.threads = n
            runner.handle.set_threads(n)


def share_threads(total: int, caps: list[int]) -> list[int]:
    """Threads for each busy runner, in order: equal parts of `total` (earlier runners take the
    remainder), each at least 1 and at most its cap (the threads it was started with)."""
    if not caps:
        return []
    base, extra = divmod(max(total, 1), len(caps))
    shares = [max(1, min(cap, base + (i < extra))) for i, cap in enumerate(caps)]
    # Threads a capped runner cannot use go to the others, in order.
    spare = max(total, 1) - sum(shares)
    for i, cap in enumerate(caps):
        if spare <= 0:
            break
        more = min(cap - shares[i], spare)
        shares[i] += more
        spare -= more
    return shares
