"""`corral top`: the live page's view in a terminal, read from GET /api/events (Ctrl-C quits)."""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.cli.client import check_reply, no_server
from corral.config import Settings

SPARK = " ▁▂▃▄▅▆▇█"
RECONNECT_S = 2.0
QUEUE_ROWS = 6  # the rest of the queue is a count: the events must stay on a small screen


def table(title: str, *columns: str) -> Table:
    t = Table(*columns, title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
              expand=True, pad_edge=False)
    t.columns[0].no_wrap = True
    return t


def sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) for each event of a text/event-stream."""
    kind, data = "message", ""
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads(data)
            kind, data = "message", ""
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def secs(s: float | None) -> str:
    return "–" if s is None else f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def bar(used: int, total: int, width: int = 24) -> str:
    filled = min(width, round(width * used / total)) if total else 0
    return "█" * filled + "░" * (width - filled)


def sparkline(values: list[float], width: int = 40) -> str:
    values = values[-width:]
    top = max(values, default=0) or 1
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


@dataclass
class View:
    """What the screen shows, built up from the stream."""

    snap: dict[str, Any] = field(default_factory=dict)
    tps: deque[float] = field(default_factory=lambda: deque(maxlen=300))
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=6))
    log: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    status: str = "connecting"

    def take(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "snapshot":
            if self.snap and data["time"] > self.snap["time"]:
                self.tps.append(max(0, data["tokens_total"] - self.snap["tokens_total"])
                                / (data["time"] - self.snap["time"]))
            self.snap = data
        elif kind in ("request_finished", "request_refused"):
            self.requests.appendleft(data)
        if line := _log_line(kind, data):
            self.log.appendleft(f"{clock(data['ts'])}  {line}")

    def render(self) -> RenderableType:
        snap = self.snap
        head = Text.assemble(("corral top", "bold"), f"  {self.status}",
                             f"  {clock(snap['time'])}" if snap else "", style="")
        parts: list[RenderableType] = [head]
        if not snap:
            return Group(*parts)
        for name, pool in snap["pools"].items():
            parts.append(Text(f"{name:>6} {bar(pool['reserved'], pool['budget'])} est {mib(pool['reserved'])}"
                              f" · meas {mib(pool['measured'])} / budget {mib(pool['budget'])}"))
        models = table("models", "model", "state", "device", "slots", "busy", "queued", "threads", "MiB est/meas")
        for r in snap["runners"]:
            slots = "■" * r["slots_busy"] + "□" * (r["slots_total"] - r["slots_busy"])
            models.add_row(r["name"], r["state"], r["device"], slots, f"{r['slots_busy']}/{r['slots_total']}",
                           str(r["queued"]), str(r["threads"]),
                           f"{r['size'] // 2**20}/{r['size_measured'] // 2**20}")
        parts.append(models)
        queue = table("queue", "#", "model", "tenant", "lane", "waited", "eta")
        for q in snap["queue"][:QUEUE_ROWS]:
            queue.add_row(str(q["position"]), q["model"], q["tenant"], q["lane"], secs(q["waited_s"]),
                          secs(q.get("eta_s")))
        if len(snap["queue"]) > QUEUE_ROWS:
            queue.add_row("…", f"{len(snap['queue']) - QUEUE_ROWS} more", "", "", "", "")
        parts.append(queue)
        tenants = "  ".join(f"{n}: {t['running']} running, {t['waiting']} waiting" for n, t in snap["tenants"].items())
        parts.append(Text(f"tenants  {tenants or '–'}"))
        now = self.tps[-1] if self.tps else 0.0
        parts.append(Text(f"tokens/s {now:7.1f}  {sparkline(list(self.tps))}"))
        recent = table("recent requests", "time", "model", "tenant", "status", "tokens", "latency", "TTFT")
        for e in self.requests:
            recent.add_row(clock(e["ts"]), e["model"], e["tenant"], str(e["status"]), str(e.get("tokens", "–")),
                           secs(e.get("latency_s")), secs(e.get("ttft_s")))
        parts += [Text("events", style="bold"), *(Text(line) for line in self.log), Text(""), recent]
        return Group(*parts)


def _log_line(kind: str, e: dict[str, Any]) -> str:
    match kind:
        case "model_loading":
            return f"{e['model']} loading on {e['device']} (estimate {mib(e['estimate'])})"
        case "model_loaded":
            return f"{e['model']} loaded in {secs(e['load_s'])}"
        case "model_unloaded":
            return f"{e['model']} {e['reason']} {e['detail']}".rstrip()
        case "model_crashed":
            return f"{e['model']} crashed ({e['reason']}) {e['detail']}".rstrip()
        case "request_refused":
            return f"{e['status']} for {e['model']} ({e['tenant']}): {e['message']}"
    return ""


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    view = View()
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    timeout = httpx.Timeout(10.0, read=30.0)  # a snapshot comes every second
    console = Console()
    with console.screen(hide_cursor=True) as screen:
        while True:
            try:
                with httpx.stream("GET", settings.base_url + "/api/events", headers=headers, timeout=timeout) as r:
                    if r.status_code != 200:
                        r.read()
                        check_reply(r)
                    view.status = "live"
                    for kind, data in sse(r.iter_lines()):
                        view.take(kind, data)
                        screen.update(view.render())
            except httpx.ConnectError:
                view.status = str(no_server(settings))
            except httpx.HTTPError as exc:
                view.status = f"reconnecting ({type(exc).__name__})"
            screen.update(view.render())
            time.sleep(RECONNECT_S)
