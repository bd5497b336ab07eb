"""The reserved interactive slot in the scheduler alone, with no engine: what it does to an
interactive request's wait and to a flood's throughput, free of the machine's load.

    python benchmarks/reserve_sim.py [--seconds 3] [--rounds 3]

The scheduler runs in-process over test_scheduler_unit's fake runner (every token 5 ms, whatever
the batch): 16 closed-loop batch clients of 32 tokens and one interactive request of 8 tokens
every 100 ms, 4 slots; the same scaled down from fairness.py's real run (a flood request holds a
slot 160 ms here, about 1.3 s there). Rounds alternate the reserve on and off. A fake token costs
the same at 3 or 4 slots, so the flood's loss here is the upper bound: a real engine's step is
cheaper with fewer slots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from test_scheduler_unit import make, spec  # noqa: E402  (the fake runner the unit tests use)

from corral.runner.protocol import GenerationOptions  # noqa: E402
from corral.scheduler.events import Text  # noqa: E402
from corral.scheduler.scheduler import Scheduler  # noqa: E402
from corral.scheduler.state import ModelSpec  # noqa: E402
from corral.scheduler.tenants import Lane, Tenant, Ticket  # noqa: E402

FLOOD = Ticket(Tenant("flood"), lane=Lane.BATCH)
USER = Ticket(Tenant("user"), lane=Lane.INTERACTIVE)


async def ttft(s: Scheduler, sp: ModelSpec, ticket: Ticket, tokens: int) -> float:
    waiter = s.admit(sp, 60, ticket)
    sent = time.monotonic()
    first = 0.0
    async for event in s.generate(waiter, "p", GenerationOptions(num_predict=tokens)):
        if not first and isinstance(event, Text):
            first = time.monotonic() - sent
    return first


async def round_(reserve: bool, seconds: float) -> tuple[list[float], int]:
    s = make(**({} if reserve else {"interactive_reserve": 0.0}))
    sp = spec("m", 100, slots=4)
    await ttft(s, sp, USER, 2)  # loaded
    stop = time.monotonic() + seconds
    answered = 0

    async def flooder() -> None:
        nonlocal answered
        while time.monotonic() < stop:
            await ttft(s, sp, FLOOD, 32)
            answered += 1

    flood = [asyncio.ensure_future(flooder()) for _ in range(16)]
    await asyncio.sleep(0.2)  # the flood holds the slots first
    users = []
    while time.monotonic() < stop:
        users.append(asyncio.ensure_future(ttft(s, sp, USER, 8)))
        await asyncio.sleep(0.1)
    times = await asyncio.gather(*users)
    await asyncio.gather(*flood)
    return times, answered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    for _ in range(args.rounds):
        for name, reserve in (("on", True), ("off", False)):
            times, answered = asyncio.run(round_(reserve, args.seconds))
            times.sort()
            for key, value in (("ttft_p50_ms", times[len(times) // 2] * 1e3), ("ttft_max_ms", times[-1] * 1e3),
                               ("flood_per_s", answered / args.seconds)):
                out[name].setdefault(key, []).append(round(value, 1))
    summary = {name: {key: statistics.median(v) for key, v in rows.items()} for name, rows in out.items()}
    print(json.dumps({"rounds": out, "median": summary}, indent=2))


if __name__ == "__main__":
    main()
