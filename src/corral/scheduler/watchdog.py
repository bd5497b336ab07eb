"""The stall watchdog: a runner with work and no sign of progress is killed (and restarted by
the scheduler when its exit is seen), so a deadlock or a stuck device cannot hold requests forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from corral.scheduler.state import Runner, RunnerState


async def watch(runners: Sequence[Runner], timeout: float, kill: Callable[[Runner, str], None],
                closed: Callable[[], bool]) -> None:
    """Until `closed()`: mark each ready runner silent for over `timeout` s as stalled and `kill`
    it with the reason its in-flight requests will read (the rest go to a new runner)."""
    while not closed():
        await asyncio.sleep(min(1.0, timeout / 4))
        now = time.monotonic()
        for runner in list(runners):
            if runner.state == RunnerState.READY and not runner.stalled and runner.handle.silent_for(now) > timeout:
                runner.stalled = True
                kill(runner, f"model runner made no progress for {timeout:g}s; "
                             "it was stopped and the model is being reloaded")


def health(runner: Runner, timeout: float) -> str:
    """"ok", or "unresponsive" while a runner with work has been silent for half the stall timeout."""
    if runner.stalled or runner.handle.silent_for() > timeout / 2:
        return "unresponsive"
    return "ok"
