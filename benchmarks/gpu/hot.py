"""Read py-spy's collapsed stacks of a runner (benchmarks/gpu/profile.sh): the engine thread's
samples split by what the step was doing, and the hottest frames by self time.

    python benchmarks/gpu/hot.py runner-c8.txt [--top 25]

A line is `frame;frame;...;frame COUNT`, each frame `function (file:line)` (native frames too).
Only stacks through the engine loop (runner/main.py `main`) count: the stdin reader and the
heartbeat thread are idle by design.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# What a step does, innermost match wins: (label, function). py-spy names a frame
# `Class.method (file:line)`; a ctypes call has no frame of its own, so llama_decode and
# llama_synchronize are the self time of Engine._run.
PHASES = [
    ("decode (Engine._run)", "Engine._run"),
    ("logits rows", "LogitsRows.load"),
    ("lay batch", "DecodeBatch.lay"),
    ("sample", "Engine._sample"),
    ("verify", "Engine._accept"),
    ("emit", "Engine._emit"),
    ("finish", "Engine._finish"),
    ("send", "main.<locals>.send"),
    ("coalesce", "Coalescer.take"),
    ("inbox", "_drain"),
    ("start", "_start"),
    ("step", "Engine.step"),
]


def phase(stack: list[str]) -> str:
    for frame in reversed(stack):
        function = frame.split(" (", 1)[0]
        for label, name in PHASES:
            if function == name:
                return label
    return "loop other"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stacks", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    phases: Counter[str] = Counter()
    selves: Counter[str] = Counter()
    total = 0
    for line in args.stacks.read_text().splitlines():
        body, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stack = body.split(";")
        if not any(f.startswith("main (corral/runner/main") for f in stack):
            continue
        n = int(count)
        total += n
        phases[phase(stack)] += n
        selves[stack[-1]] += n
    print(f"{total} samples of the engine loop")
    for label, n in phases.most_common():
        print(f"  {label:<14} {100 * n / max(total, 1):5.1f} %")
    print("hottest frames (self):")
    for frame, n in selves.most_common(args.top):
        print(f"  {100 * n / max(total, 1):5.1f} %  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
