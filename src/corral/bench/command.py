"""`corral bench`: drive an Ollama- or OpenAI-API endpoint and report serving metrics."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from corral.bench.load import LoadSpec, Result, RunResult, run_load, warm_up
from corral.bench.prompts import load_prompts
from corral.bench.report import plot, summarize, table

console = Console(stderr=True)


def add_arguments(p: argparse.ArgumentParser, default_url: str, default_model: str) -> None:
    p.add_argument("--base-url", default=default_url)
    p.add_argument("--api", choices=["openai", "ollama"], default="openai")
    p.add_argument("--model", default=default_model)
    p.add_argument("--concurrency", type=int, default=1, help="closed loop: clients at once")
    p.add_argument("--request-rate", type=float, default=0.0, help="open loop: Poisson arrivals per second")
    p.add_argument("--sweep", default="", help="several concurrencies, e.g. 1,4,8,16")
    p.add_argument("--num-prompts", type=int, default=0, help="default: 8 x concurrency, at least 16")
    p.add_argument("--prompts-file", type=Path, default=None, help="JSONL of {\"prompt\": ...}")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="for Poisson arrival times")
    p.add_argument("--json", dest="json_path", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="PNG of throughput and TTFT vs concurrency")
    p.add_argument("--server-stats", action="store_true",
                   help="report the runner's share of time outside llama_decode (corral's /metrics)")
    p.add_argument("--no-warmup", action="store_true")


def _decode_counters(base_url: str) -> tuple[float, float] | None:
    """(decode seconds, busy seconds) summed over runners, from corral's /metrics."""
    try:
        text = httpx.get(base_url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    total = {"decode": 0.0, "busy": 0.0}
    for kind in total:
        for value in re.findall(rf"^corral_runner_{kind}_seconds\{{[^}}]*\}} (\S+)$", text, re.M):
            total[kind] += float(value)
    return total["decode"], total["busy"]


def run_sweep(args: argparse.Namespace) -> list[dict]:
    prompts = load_prompts(args.prompts_file)
    loads = [int(c) for c in args.sweep.split(",") if c.strip()] if args.sweep else [args.concurrency]
    summaries = []
    for i, concurrency in enumerate(loads):
        n = args.num_prompts or max(8 * concurrency, 16)
        spec = LoadSpec(args.base_url, args.api, args.model, prompts, n, args.max_tokens, args.temperature,
                        concurrency, args.request_rate if not args.sweep else 0.0, args.seed)
        if i == 0 and not args.no_warmup:
            warm = asyncio.run(warm_up(spec))
            if not warm.ok:
                raise RuntimeError(f"warm-up request failed: {warm.status} {warm.error}")
        before = _decode_counters(args.base_url) if args.server_stats else None
        with Progress(TextColumn(f"C={concurrency}" if not spec.request_rate else f"{spec.request_rate}/s"),
                      BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("requests", total=n)

            def advance(_: Result, task: TaskID = task) -> None:
                progress.advance(task)
            run: RunResult = asyncio.run(run_load(spec, advance))
        summary = summarize(run)
        after = _decode_counters(args.base_url) if args.server_stats else None
        if before and after and after[1] > before[1]:
            decode, busy = after[0] - before[0], after[1] - before[1]
            summary["server"] = {"decode_s": decode, "busy_s": busy, "python_share": 1 - decode / busy}
        summaries.append(summary)
    return summaries


def main(args: argparse.Namespace) -> int:
    summaries = run_sweep(args)
    Console(width=200).print(table(summaries, f"{args.model} via {args.api} at {args.base_url}"))
    for s in summaries:
        if "server" in s:
            console.print(f"C={s['concurrency']}: runner time outside llama_decode "
                          f"{s['server']['python_share'] * 100:.1f}% of {s['server']['busy_s']:.1f}s busy")
    if args.json_path:
        args.json_path.write_text(json.dumps(summaries, indent=2))
    if args.plot:
        plot({args.base_url: summaries}, args.plot)
    return 0
