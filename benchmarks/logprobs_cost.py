"""What logprobs cost: generation speed (tokens/s, the runner's own eval_count / eval_duration)
at C=1, without logprobs, with logprobs, and with top_logprobs 5 and 20; optionally the same
requests without logprobs on another source tree (a before/after run of the plain path).

    python benchmarks/logprobs_cost.py [--model smollm2:135m] [--rounds 8] [--tokens 128]
        [--baseline-src /tmp/before/src]

Requests alternate between the variants round by round, so a machine whose load changes (other
people's tests) moves them alike; the median of the rounds is reported. Not part of CI.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

import httpx
from serving import start_corral

VARIANTS: dict[str, dict] = {
    "plain": {},
    "logprobs": {"logprobs": True},
    "top 5": {"logprobs": True, "top_logprobs": 5},
    "top 20": {"logprobs": True, "top_logprobs": 20},
}


def start(src: Path, models: Path) -> tuple[subprocess.Popen, str]:
    return start_corral(src, models, 1)


def tokens_per_s(url: str, model: str, tokens: int, extra: dict) -> float:
    body = {"model": model, "prompt": "Tell me a long story about a lighthouse keeper.", "stream": False,
            "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": tokens}, **extra}
    r = httpx.post(url + "/api/generate", json=body, timeout=600).json()
    assert r["eval_count"] == tokens, r
    return r["eval_count"] / r["eval_duration"] * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache/corral/test-models")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--baseline-src", type=Path, default=None)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    servers = {"": start(here, args.models)}
    if args.baseline_src:
        servers["baseline "] = start(args.baseline_src, args.models)
    try:
        runs = [(f"{tag}{name}", url, extra) for tag, (_, url) in servers.items()
                for name, extra in VARIANTS.items() if not tag or not extra]
        for _, url, extra in runs:
            tokens_per_s(url, args.model, 8, extra)  # load and warm up
        speeds: dict[str, list[float]] = {label: [] for label, _, _ in runs}
        for _ in range(args.rounds):
            for label, url, extra in runs:
                speeds[label].append(tokens_per_s(url, args.model, args.tokens, extra))
        plain = statistics.median(speeds["plain"])
        print(f"{args.model}, C=1, {args.tokens} tokens, {args.rounds} rounds, median tokens/s (min..max)")
        for label, values in speeds.items():
            med = statistics.median(values)
            print(f"  {label:18s} {med:7.1f}  ({min(values):.1f}..{max(values):.1f})  x{med / plain:.3f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
