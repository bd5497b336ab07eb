"""Scheduler logic with a fake runner behind RunnerHandle's interface and simulated GPUs.

Every rule here also has a test on the real models (test_scheduler_live.py); these pin down
placement decisions that CI cannot reach for real (no GPU) or only slowly.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest

from corral.config import FOREVER, Settings
from corral.models.gguf_info import GGUFInfo
from corral.runner import protocol as p
from corral.runner.protocol import GenerationOptions, LoadConfig
from corral.scheduler.events import Done, Event, Queued, Text
from corral.scheduler.memory import RUNTIME_OVERHEAD, Gpu
from corral.scheduler.scheduler import Busy, ModelSpec, NeverFits, RunnerFactory, Scheduler

MiB = 2**20
GiB = 2**30


class FakeHandle:
    """Loads instantly, streams `num_predict` tokens at 5 ms each."""

    loads: list[LoadConfig] = []
    stats = p.Stats(decode_ns=0, busy_ns=0)
    kill_reason = ""

    def __init__(self, cfg: LoadConfig, on_exit) -> None:
        self.cfg, self.on_exit, self.alive, self.pid = cfg, on_exit, False, 1
        self.threads: list[int] = []  # every set_threads call

    def set_threads(self, n: int) -> None:
        self.threads.append(n)

    async def start(self, timeout: float) -> None:
        FakeHandle.loads.append(self.cfg)
        await asyncio.sleep(0.01)
        self.alive = True

    async def stream(self, prompt: str, options: GenerationOptions, num_ctx: int = 0, context=None, want_context=False):
        for i in range(max(options.num_predict, 1)):
            await asyncio.sleep(0.005)
            yield p.Token("r", f"t{i} ")
        yield p.Done("r", p.FinishReason.LENGTH, eval_count=options.num_predict)

    async def stop(self, timeout: float = 5) -> None:
        self.alive = False

    def rss(self) -> int:
        return 0

    def silent_for(self, now: float | None = None) -> float:
        return 0.0  # always progressing: the watchdog is tested on a real stopped runner


def spec(name: str, weights_mib: int, gpu: bool = False, slots: int = 1) -> ModelSpec:
    info = GGUFInfo(path=Path(f"/models/{name}"), architecture="fake", name=name, file_size=0,
                    tensor_bytes=weights_mib * MiB - RUNTIME_OVERHEAD, parameter_count=1, context_length=4096,
                    block_count=0, embedding_length=0, head_count=1, head_count_kv=1, key_length=0,
                    value_length=0, sliding_window=0, vocab_size=1, file_type="Q4_0", chat_template=None,
                    bos_token="", eos_token="")
    return ModelSpec(name=name, digest="sha256:" + "0" * 64, info=info, n_ctx=512, n_slots=slots,
                     n_gpu_layers=-1 if gpu else 0)


def make(memory_mib: int = 4096, gpus: list[Gpu] | None = None, **kw) -> Scheduler:
    FakeHandle.loads = []
    return Scheduler(Settings(memory_limit=memory_mib * MiB, cuda=bool(gpus), **kw), gpus=gpus or [],
                     runner_factory=cast(RunnerFactory, FakeHandle))  # duck-typed: RunnerHandle's interface


async def run(s: Scheduler, sp: ModelSpec, n: int = 3, keep_alive: float = 60) -> str:
    waiter = s.admit(sp, keep_alive)
    out = [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=n))]
    assert isinstance(out[-1], Done), out
    return "".join(e.text for e in out if isinstance(e, Text))


def gpu(index: int, free_gib: float) -> Gpu:
    return Gpu(index, "simulated", 80 * GiB, int(free_gib * GiB))


def test_gpu_model_goes_wholly_to_a_gpu_that_fits():
    async def main():
        s = make(gpus=[gpu(0, 1.0), gpu(1, 20)])
        await run(s, spec("big", 4000, gpu=True))
        (r,) = s.runners
        assert str(r.pool) == "gpu1"
        assert FakeHandle.loads[0].n_gpu_layers == -1 and FakeHandle.loads[0].main_gpu == 1
    asyncio.run(main())


def test_model_too_big_for_vram_goes_to_cpu_not_partially():
    async def main():
        s = make(memory_mib=16 * 1024, gpus=[gpu(0, 2)])
        await run(s, spec("big", 8000, gpu=True))
        (r,) = s.runners
        assert str(r.pool) == "cpu" and FakeHandle.loads[0].n_gpu_layers == 0
    asyncio.run(main())


def test_idle_gpu_model_is_evicted_before_falling_back_to_cpu():
    async def main():
        s = make(memory_mib=16 * 1024, gpus=[gpu(0, 6)])
        await run(s, spec("a", 4000, gpu=True))
        await run(s, spec("b", 4000, gpu=True))
        assert [(r.spec.name, str(r.pool)) for r in s.runners] == [("b", "gpu0")]
    asyncio.run(main())


def test_never_fits_is_refused_at_admission():
    s = make(memory_mib=1024)
    with pytest.raises(NeverFits, match="budget"):
        asyncio.run(run(s, spec("huge", 2048)))


def test_queue_bound_counts_only_waiting_requests():
    async def main():
        s = make(max_queue=2)
        sp = spec("m", 100, slots=1)
        await run(s, sp)  # loaded
        waiters = [s.admit(sp, 60) for _ in range(3)]  # 1 runs, 2 wait
        with pytest.raises(Busy, match="maximum pending requests exceeded"):
            s.admit(sp, 60)
        outs = await asyncio.gather(*(collect(s, w) for w in waiters))
        assert all(isinstance(o[-1], Done) for o in outs)
    asyncio.run(main())


async def collect(s: Scheduler, waiter) -> list[Event]:
    return [e async for e in s.generate(waiter, "p", GenerationOptions(num_predict=3))]


def test_eviction_prefers_shortest_keep_alive_then_lru():
    async def main():
        s = make(memory_mib=350)
        await run(s, spec("forever", 100), keep_alive=FOREVER)
        await run(s, spec("short", 100), keep_alive=30)
        await run(s, spec("long", 100), keep_alive=600)
        await run(s, spec("new", 100))
        assert sorted(r.spec.name for r in s.runners) == ["forever", "long", "new"]
        await run(s, spec("newer", 100))
        assert sorted(r.spec.name for r in s.runners) == ["forever", "long", "newer"]  # "new" had 60s
    asyncio.run(main())


def test_loaded_model_cap():
    async def main():
        s = make(memory_mib=10_000, max_loaded_models=2)
        for name in "abc":
            await run(s, spec(name, 100))
        assert len(s.runners) == 2 and "a" not in {r.spec.name for r in s.runners}
    asyncio.run(main())


def test_waiting_for_memory_does_not_block_a_loaded_model():
    async def main():
        s = make(memory_mib=250)
        a, b = spec("a", 200, slots=2), spec("b", 200)
        await run(s, a)
        long_a = asyncio.create_task(run(s, a, n=60))  # keeps "a" busy ~0.3 s
        await asyncio.sleep(0.02)
        wait_b = asyncio.create_task(run(s, b))  # must wait for "a" to go idle
        await asyncio.sleep(0.02)
        assert not wait_b.done()
        # A new request for the loaded model is not stuck behind "b".
        await asyncio.wait_for(run(s, a, n=2), timeout=0.2)
        assert not long_a.done()
        await asyncio.gather(long_a, wait_b)
        assert [r.spec.name for r in s.runners] == ["b"]
    asyncio.run(main())


def test_share_threads_splits_evenly_within_caps():
    from corral.scheduler.threads import share_threads

    assert share_threads(8, []) == []
    assert share_threads(8, [8]) == [8]
    assert share_threads(8, [8, 8, 8]) == [3, 3, 2]
    assert share_threads(2, [2, 2, 2]) == [1, 1, 1]  # never fewer than one
    assert share_threads(8, [2, 8]) == [2, 6]  # a capped runner's part goes to the other
    assert share_threads(4, [1, 1]) == [1, 1]


def test_busy_cpu_runners_share_the_threads():
    async def main():
        s = make(memory_mib=1000, num_threads=4)
        a, b = spec("a", 100), spec("b", 100)
        await run(s, a), await run(s, b)  # both loaded, both idle
        ra, rb = (next(r for r in s.runners if r.spec.name == n) for n in "ab")
        assert ra.threads == rb.threads == 4 and ra.handle.threads == rb.handle.threads == []
        both = [asyncio.create_task(run(s, a, n=40)), asyncio.create_task(run(s, b, n=20))]
        await asyncio.sleep(0.05)
        assert (ra.threads, rb.threads) == (2, 2)  # two busy runners: half each
        await both[1]
        await asyncio.sleep(0.01)
        assert ra.threads == 4  # alone again: all of them
        await both[0]
        assert ra.handle.threads == [2, 4] and rb.handle.threads == [2]
    asyncio.run(main())


def test_larger_num_ctx_reloads_once_smaller_reuses():
    async def main():
        s = make()
        small, big = spec("m", 100), spec("m", 100)
        big = ModelSpec(**{**big.__dict__, "n_ctx": 2048})
        await run(s, small)
        await run(s, big)
        await run(s, small)
        await run(s, big)
        assert [c.n_ctx_slot for c in FakeHandle.loads] == [512, 2048]
    asyncio.run(main())


def test_keep_alive_zero_unloads_when_idle():
    async def main():
        s = make()
        await run(s, spec("m", 100), keep_alive=0)
        await asyncio.sleep(0.05)
        assert s.runners == []
    asyncio.run(main())


def test_cancelled_waiter_leaves_the_queue():
    async def main():
        s = make()
        sp = spec("m", 100)
        await run(s, sp)
        busy = asyncio.create_task(run(s, sp, n=40))
        await asyncio.sleep(0.01)
        waiter = s.admit(sp, 60)
        gen = s.generate(waiter, "p", GenerationOptions(num_predict=3))
        first = await gen.__anext__()
        assert isinstance(first, Queued) and first.position == 1
        await gen.aclose()
        assert s.waiters == deque_empty()
        await busy
        assert s.runners[0].busy == 0
    asyncio.run(main())


def deque_empty():
    from collections import deque
    return deque()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_alarm_asked_again_from_its_own_callback_fires_again(loop: str) -> None:
    """The scheduler's rekick Alarm: a kick run by the alarm often asks for the next one (the
    swap window is not over yet). uvloop, Ray's loop, fires timers up to a millisecond before
    their when(): the fired handle once looked pending, the new request was dropped, and a
    node's queue waited for ever (CI, test_cluster's ten-request test)."""
    from corral.scheduler.eviction import Alarm

    async def main() -> list[float]:
        fired: list[float] = []
        done = asyncio.get_running_loop().create_future()

        def kick() -> None:
            fired.append(time.monotonic())
            if len(fired) < 50:
                # Odd delays, as a window's remainder is: some round down to the millisecond.
                alarm.within(0.0004 + 0.0001 * (len(fired) % 7))
            elif not done.done():
                done.set_result(None)

        alarm = Alarm(kick)
        alarm.within(0.001)
        alarm.within(5.0)  # a later request does not push the sooner call back
        await asyncio.wait_for(done, 10)
        return fired

    runner = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    assert len(runner(main())) == 50
