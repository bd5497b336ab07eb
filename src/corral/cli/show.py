"""`corral show` and `/show info`: a model's details in the sections Ollama's showInfo prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.cli.output import table


def _section(header: str, rows: Sequence[Sequence[str]]) -> str:
    return f"  {header}\n" + table(rows) + "\n"


def _head(text: str, n: int) -> list[list[str]]:
    """The first n non-blank lines, then "..." if there were more."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [["", line] for line in lines[:n]] + ([["", "..."]] if len(lines) > n else [])


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def show_info(info: dict[str, Any]) -> str:
    details, meta = info.get("details") or {}, info.get("model_info") or {}
    arch = str(meta.get("general.architecture") or details.get("family") or "")
    rows = [["", "architecture", arch]] if arch else []
    if details.get("parameter_size"):
        rows.append(["", "parameters", str(details["parameter_size"])])
    for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
        if f"{arch}.{key}" in meta:
            rows.append(["", label, _number(meta[f"{arch}.{key}"])])
    rows.append(["", "quantization", str(details.get("quantization_level", ""))])
    out = _section("Model", rows)
    if info.get("capabilities"):
        out += _section("Capabilities", [["", str(c)] for c in info["capabilities"]])
    if info.get("parameters"):
        out += _section("Parameters", [["", *line.split()] for line in str(info["parameters"]).splitlines()
                                       if line.strip()])
    if info.get("system"):
        out += _section("System", _head(str(info["system"]), 2))
    if info.get("license"):
        out += _section("License", _head(str(info["license"]), 2))
    return out
