"""Serving metrics from a run: throughput, TTFT, TPOT, ITL, errors; as a table, JSON or a plot."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.table import Table

from corral.bench.load import RunResult


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _dist(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else float("nan"),
            "p50": _pct(values, 0.5), "p99": _pct(values, 0.99)}


def summarize(run: RunResult) -> dict:
    ok = [r for r in run.results if r.ok]
    busy = [r for r in run.results if r.status == 503]
    tokens = sum(r.output_tokens for r in ok)
    return {
        "api": run.spec.api, "model": run.spec.model, "concurrency": run.spec.concurrency,
        "request_rate": run.spec.request_rate, "num_prompts": run.spec.num_prompts,
        "max_tokens": run.spec.max_tokens, "completed": len(ok),
        "errors": len(run.results) - len(ok) - len(busy), "rejected_503": len(busy),
        "wall_s": run.wall, "output_tokens": tokens,
        "output_tokens_per_s": tokens / run.wall if run.wall > 0 else 0.0,
        "requests_per_s": len(ok) / run.wall if run.wall > 0 else 0.0,
        "ttft_s": _dist([r.ttft for r in ok if r.ttft is not None]),
        "tpot_s": _dist([r.tpot for r in ok if r.tpot is not None]),
        "itl_s": _dist([x for r in ok for x in r.itls]),
        "latency_s": _dist([r.latency for r in ok]),
        "error_samples": sorted({f"{r.status}: {r.error}" for r in run.results if not r.ok})[:3],
    }


def table(summaries: list[dict], title: str = "corral bench") -> Table:
    t = Table(title=title)
    for col in ("C / rate", "done", "err", "503", "out tok/s", "req/s", "TTFT p50", "TTFT p99",
                "TPOT p50", "ITL mean", "ITL p99"):
        t.add_column(col, justify="right")
    ms = lambda v: f"{v * 1000:.1f} ms"
    for s in summaries:
        load = f"{s['request_rate']:g}/s" if s["request_rate"] else str(s["concurrency"])
        t.add_row(load, str(s["completed"]), str(s["errors"]), str(s["rejected_503"]),
                  f"{s['output_tokens_per_s']:.1f}", f"{s['requests_per_s']:.2f}", ms(s["ttft_s"]["p50"]),
                  ms(s["ttft_s"]["p99"]), ms(s["tpot_s"]["p50"]), ms(s["itl_s"]["mean"]), ms(s["itl_s"]["p99"]))
    return t


def plot(series: dict[str, list[dict]], path: Path) -> None:
    """Throughput and TTFT p50 against concurrency, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, summaries in series.items():
        closed = [s for s in summaries if not s["request_rate"]]
        xs = [s["concurrency"] for s in closed]
        ax1.plot(xs, [s["output_tokens_per_s"] for s in closed], marker="o", label=name)
        ax2.plot(xs, [s["ttft_s"]["p50"] * 1000 for s in closed], marker="o", label=name)
    ax1.set(xlabel="concurrency", ylabel="output tokens/s", title="Throughput")
    ax2.set(xlabel="concurrency", ylabel="TTFT p50 (ms)", title="Time to first token")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
