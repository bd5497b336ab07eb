"""Tool calls out of a model's text: `<tool_call>{...}</tool_call>` blocks (Hermes, Qwen, SmolLM3)
or a reply that is nothing but a JSON call ({"name", "arguments"|"parameters"}, or a list of them)."""

from __future__ import annotations

import json
import re
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _as_call(obj: Any, names: set[str]) -> dict | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if name not in names or not isinstance(args, dict):
        return None
    return {"function": {"name": name, "arguments": args}}


def parse_tool_calls(text: str, names: set[str]) -> tuple[str, list[dict]]:
    """(remaining content, calls) — calls only for tools the request offered."""
    calls = []
    for block in _BLOCK.findall(text):
        try:
            call = _as_call(json.loads(block), names)
        except ValueError:
            call = None
        if call:
            calls.append(call)
    if calls:
        return _BLOCK.sub("", text).strip(), calls
    body = text.strip()
    fenced = _FENCE.match(body)
    try:
        obj = json.loads(fenced.group(1) if fenced else body)
    except ValueError:
        return text, []
    items = obj if isinstance(obj, list) else [obj]
    parsed = [_as_call(item, names) for item in items]
    if parsed and all(parsed):
        return "", [call for call in parsed if call]  # all of them: the comprehension says so to mypy
    return text, []
