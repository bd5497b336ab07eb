"""Tool calls out of a model's output, as it streams.

The formats the major families emit, after a tag that starts them:
  * Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one block per call)
  * Llama 3.x: `{"name": ..., "parameters": {...}}`, alone or after `<|python_tag|>`
  * Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, and the newer
    `[TOOL_CALLS]name[ARGS]{...}` (optionally `name[CALL_ID]id[ARGS]{...}`)
  * the tag a Go template writes before its .ToolCalls (Ollama's tools.parseTag), and a reply
    that starts with a bare JSON call or list of calls (Ollama's "{" tag).
Text that cannot be the start of a call is passed on at once; a tag's first characters are kept
back until the next chunk decides. A call is only one for a tool the request offered; anything
else after a tag (malformed JSON, an unknown name, a call cut off at the end) comes back as text.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corral.models.gotemplate import nodes as n

KNOWN_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
_CLOSERS = ("</tool_call>",)
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ARGS_AFTER_NAME = re.compile(r"(?:\[CALL_ID\][A-Za-z0-9_\-]*)?\[ARGS\]")
_ID_CHARS = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call: Ollama's api.ToolCall (id, function.index/name/arguments)."""

    name: str
    arguments: dict[str, Any]
    index: int = 0
    id: str = ""


def new_call_id() -> str:
    """Ollama's toolCallId: "call_" and 8 random lowercase letters or digits."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(8))


# ---- the tag a template writes before its calls

def go_tool_tag(root: n.ListNode) -> str:
    """Ollama's parseTag: the first text inside the first {{if}} on .ToolCalls, cut before any
    "{" and trimmed; "{" when there is none (a call is then a bare JSON object)."""
    branch = _tool_calls_branch(root.nodes)
    text = _first_text(branch.list.nodes) if branch else None
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").partition("{")[0].strip()
    return tag or "{"


def jinja_tool_tag(template: str | None) -> str:
    """The call tag a Jinja chat template shows (Ollama leaves Jinja to llama.cpp, which knows
    each family's format): the first known tag it writes, else "{"."""
    found = [(template.find(tag), tag) for tag in KNOWN_TAGS if template and tag in template]
    return min(found)[1] if found else "{"


def _tool_calls_branch(nodes: list[n.Node]) -> n.BranchNode | None:
    for node in nodes:
        if isinstance(node, n.ListNode):
            if found := _tool_calls_branch(node.nodes):
                return found
        elif isinstance(node, n.BranchNode):
            if node.kind == "if" and any(isinstance(a, n.FieldNode) and "ToolCalls" in a.ident
                                         for cmd in node.pipe.cmds for a in cmd.args):
                return node
            for body in (node.list, node.else_list):
                if body is not None and (found := _tool_calls_branch(body.nodes)):
                    return found
    return None


def _first_text(nodes: list[n.Node]) -> str | None:
    """Depth first, the first text that is not only space; an action or the end of a nested
    block stops the search (text after a call's fields is not its tag)."""
    for node in nodes:
        if isinstance(node, n.TextNode):
            if node.text.strip():
                return node.text
        elif isinstance(node, n.ListNode):
            if (text := _first_text(node.nodes)) is not None:
                return text
        elif isinstance(node, n.BranchNode):
            for body in (node.list, node.else_list):
                if body is not None and (text := _first_text(body.nodes)) is not None:
                    return text
            return None
        elif isinstance(node, n.ActionNode):
            return None
    return None


# ---- the parser

Piece = str | ToolCall  # text to send on, or a finished call


class ToolCallParser:
    """Fed a model's output chunk by chunk; add() returns what can be sent now, in order."""

    def __init__(self, names: Iterable[str], tag: str = "{") -> None:
        self.names = set(names)
        tags = {t for t in (tag, *KNOWN_TAGS) if t not in ("{", "[")}
        self.tags = sorted(tags, key=len, reverse=True)  # the longest match first
        self._markers = self.tags + list(_CLOSERS)
        self._buf = ""
        self._started = False  # seen anything but space: a bare JSON call may only come first
        self._in_calls = False
        self._parsed = 0  # calls in the run of calls being read
        self._count = 0

    @property
    def called(self) -> bool:
        return self._count > 0

    def add(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._step(out):
            pass
        return _merged(out)

    def flush(self) -> list[Piece]:
        """The end of the output: what is kept back is text (a call cut off is not a call), but
        what is left after finished calls is their closing syntax."""
        rest, self._buf = self._buf, ""
        closing = self._in_calls and self._parsed and any(m.startswith(rest.strip()) for m in self._markers)
        self._in_calls = False
        return [rest] if rest and not closing else []

    def _step(self, out: list[Piece]) -> bool:
        """One move; True when another may follow at once."""
        if self._in_calls:
            return self._calls(out)
        buf = self._buf
        if not self._started:
            body = buf.lstrip()
            if not body:
                return False
            self._started = True
            if body[0] in "{[":
                self._enter()
                return True
        at = min((i for i in (buf.find(t) for t in self.tags) if i >= 0), default=-1)
        if at >= 0:
            out.append(buf[:at])
            self._buf = buf[at:]
            self._enter()
            return True
        keep = max((_overlap(buf, t) for t in self.tags), default=0)
        out.append(buf[:len(buf) - keep])
        self._buf = buf[len(buf) - keep:]
        return False

    def _enter(self) -> None:
        self._in_calls, self._parsed = True, 0

    def _calls(self, out: list[Piece]) -> bool:
        """Calls, one after another, from the start of the buffer (a tag, or a bare { or [).
        Until the first call, the buffer is kept whole (it is text if no call comes); after
        one, the syntax between calls is dropped."""
        buf, pos = self._buf, 0
        while True:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
            rest = buf[pos:]
            marker = next((m for m in self._markers if rest.startswith(m)), None) if rest else None
            if marker:
                pos += len(marker)
                continue
            if not rest or any(m.startswith(rest) for m in self._markers):
                call, used = None, 0  # a marker's first characters: wait
            elif rest[0] in "[],":
                pos += 1
                continue
            else:
                call, used = self._one_call(rest)
            if used == 0:  # wait for more text
                self._buf = buf[pos:] if self._parsed else buf
                return False
            if call is None:  # not a call (used < 0: the calls end here; else a malformed one)
                end = pos + max(used, 0)
                out.append(buf[pos if self._parsed else 0:end])
                self._buf, self._in_calls = buf[end:], False
                return bool(self._buf)
            out.append(ToolCall(call.name, call.arguments, self._count, new_call_id()))
            self._count += 1
            self._parsed += 1
            buf, pos = buf[pos + used:], 0
            self._buf = buf

    def _one_call(self, rest: str) -> tuple[ToolCall | None, int]:
        """(call, characters used) for the call `rest` starts with; used 0: wait for more,
        -1 with None: it ends the calls here (not a call); >0 with None: a malformed one."""
        if rest[0] == "{":
            end = _json_end(rest)
            if end is None:
                return None, 0
            try:
                obj = json.loads(rest[:end])
            except ValueError:
                return None, end
            return _as_call(obj, self.names), end
        named = _NAME.match(rest)
        if named is None:
            return None, -1
        name, after = named.group(), rest[named.end():]
        if not after:
            return None, 0 if any(t.startswith(name) for t in self.names) else -1
        args = _ARGS_AFTER_NAME.match(after)
        if args is None:
            return None, 0 if name in self.names and _args_marker_begins(after) else -1
        body = after[args.end():].lstrip()
        start = len(rest) - len(body)
        if not body:
            return None, 0
        end = _json_end(body) if body[0] == "{" else -1
        if end is None:
            return None, 0
        if end < 0:
            return None, start
        try:
            arguments = json.loads(body[:end])
        except ValueError:
            return None, start + end
        if name not in self.names or not isinstance(arguments, dict):
            return None, start + end
        return ToolCall(name, arguments), start + end


def _args_marker_begins(text: str) -> bool:
    """Whether `text` may still become `[ARGS]` or `[CALL_ID]id[ARGS]`."""
    if "[ARGS]".startswith(text) or "[CALL_ID]".startswith(text):
        return True
    if not text.startswith("[CALL_ID]"):
        return False
    tail = text[len("[CALL_ID]"):].lstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    return "[ARGS]".startswith(tail)


def _as_call(obj: Any, names: set[str]) -> ToolCall | None:
    """A parsed JSON object as a call of an offered tool: {"name", "arguments"|"parameters"}
    (arguments may be a JSON string), OpenAI's {"function": {...}}, or {"<tool name>": {...}}."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = obj["function"]
    if "name" not in obj and len(obj) == 1:
        ((name, args),) = obj.items()
    else:
        name = obj.get("name")
        args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if name not in names or not isinstance(args, dict):
        return None
    return ToolCall(name, args)


def _json_end(text: str) -> int | None:
    """The end of the JSON object `text` starts with (braces outside strings), None if it has not
    ended yet."""
    depth, in_string, escaped = 0, False, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = in_string
        elif c == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _overlap(text: str, tag: str) -> int:
    """The longest suffix of `text` that is a prefix of `tag`."""
    for size in range(min(len(tag), len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


def _merged(pieces: list[Piece]) -> list[Piece]:
    """Adjacent texts joined, empty ones dropped."""
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str):
            if not piece:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += piece
                continue
        out.append(piece)
    return out


def parse_tool_calls(text: str, names: Iterable[str], tag: str = "{") -> tuple[str, list[ToolCall]]:
    """A whole output at once: (its text, the calls in it)."""
    parser = ToolCallParser(names, tag)
    pieces = parser.add(text) + parser.flush()
    return ("".join(p for p in pieces if isinstance(p, str)),
            [p for p in pieces if isinstance(p, ToolCall)])
