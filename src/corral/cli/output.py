"""What the CLI prints, formatted as Ollama's CLI formats it: tables (tablewriter without borders),
sizes and times (Ollama's format package), Go durations, the --verbose summary, word wrap."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.cells import cell_len

PADDING = "    "  # tablewriter's SetTablePadding in cmd.go


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Left-aligned columns, never truncated (a pipe gets every character of a name)."""
    lines = [list(header)] if header else []
    lines += [list(r) for r in rows]
    if not lines:
        return ""
    widths = [max(cell_len(line[i]) for line in lines if i < len(line)) for i in range(max(map(len, lines)))]
    out = []
    for line in lines:
        cells = [cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(line)]
        out.append(PADDING.join(cells).rstrip() + "\n")
    return "".join(out)


def human_bytes(b: int) -> str:
    """format.HumanBytes: decimal units, one decimal below 10."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            value = b / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{b} B"


def _human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_time(iso: str, zero: str = "Never", now: datetime | None = None) -> str:
    """format.HumanTime: "4 minutes ago", "About an hour from now", "Forever"."""
    if not iso:
        return zero
    at = datetime.fromisoformat(iso)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = ((now or datetime.now(UTC)) - at).total_seconds()
    if delta / 3600 // 24 // 365 < -20:
        return "Forever"
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"


def _decimal(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    return f"{whole}.{rest:0{len(str(unit)) - 1}d}".rstrip("0")


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "1.503s", "12.5ms", "2m3.000000001s"."""
    sign, u = ("-" if ns < 0 else ""), abs(int(ns))
    if u == 0:
        return "0s"
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_decimal(u, 1_000)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_decimal(u, 1_000_000)}ms"
    text = _decimal(u % 60_000_000_000, 1_000_000_000) + "s"
    minutes = u // 60_000_000_000
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = f"{minutes}m" + text
        if hours:
            text = f"{hours}h" + text
    return sign + text


def summary(final: dict[str, Any]) -> str:
    """api.Metrics.Summary(): each line only when its number is there."""
    lines = []
    get = lambda key: int(final.get(key) or 0)
    rate = lambda count, ns: f"{get(count) / (get(ns) / 1e9):.2f} tokens/s"
    if get("total_duration") > 0:
        lines.append(f"total duration:       {go_duration(get('total_duration'))}")
    if get("load_duration") > 0:
        lines.append(f"load duration:        {go_duration(get('load_duration'))}")
    if get("prompt_eval_count") > 0:
        lines.append(f"prompt eval count:    {get('prompt_eval_count')} token(s)")
    if get("prompt_eval_duration") > 0:
        lines.append(f"prompt eval duration: {go_duration(get('prompt_eval_duration'))}")
        lines.append(f"prompt eval rate:     {rate('prompt_eval_count', 'prompt_eval_duration')}")
    if get("eval_count") > 0:
        lines.append(f"eval count:           {get('eval_count')} token(s)")
    if get("eval_duration") > 0:
        lines.append(f"eval duration:        {go_duration(get('eval_duration'))}")
        lines.append(f"eval rate:            {rate('eval_count', 'eval_duration')}")
    return "".join(line + "\n" for line in lines)


def go_value(value: Any) -> str:
    """fmt's %v for the JSON values a parameter holds: [a b] for lists, 1 for 1.0."""
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width(stream: TextIO = sys.stdout) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


class WordWrap:
    """displayResponse in cmd.go: streamed text wrapped at word boundaries as it arrives; a word that
    would cross the margin is erased and written again on the next line."""

    def __init__(self, enabled: bool, out: TextIO = sys.stdout) -> None:
        self.out, self.width = out, terminal_width(out)
        self.enabled = enabled and self.width >= 10
        self.line_length, self.word = 0, ""

    def write(self, content: str) -> None:
        if not self.enabled:
            self.out.write(self.word + content)
            self.word = ""
        else:
            for ch in content:
                self._char(ch)
        self.out.flush()

    def _char(self, ch: str) -> None:
        w = cell_len(ch)
        if self.line_length + 1 > self.width - 5:
            if cell_len(self.word) > self.width - 10:  # one long word: no use moving it
                self.out.write(self.word + ch)
                self.word, self.line_length = "", 0
                return
            if self.word:
                self.out.write(f"\x1b[{cell_len(self.word)}D")
            self.out.write("\x1b[K\n" + self.word + ch)
            self.line_length = cell_len(self.word) + w
            return
        self.out.write(ch)
        self.line_length += w
        if w >= 2 or ch in " \t":
            self.word = ""
        elif ch in "\r\n":
            self.line_length, self.word = 0, ""
        else:
            self.word += ch
