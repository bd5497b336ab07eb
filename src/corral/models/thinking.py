"""Thinking as Ollama does it: the request's `think` value, the tags a template puts around a
reasoning trace (thinking.InferTags), and the incremental parser that splits a model's output
into thinking and content (thinking.Parser), fed chunk by chunk.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Literal

from corral.errors import ClientError
from corral.models.gotemplate import nodes as n

ThinkLevel = Literal["high", "medium", "low", "max"]
Think = bool | ThinkLevel  # a request's `think`: None when not given
LEVELS: tuple[str, ...] = ("high", "medium", "low", "max")


def parse_think(value: object) -> Think | None:
    """A request's `think` as Ollama's ThinkValue reads it (else its error, as a 400)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in LEVELS:
            return value  # type: ignore[return-value]  # one of the levels, checked above
        raise ClientError(f'invalid think value: "{value}" '
                          '(must be "high", "medium", "low", "max", true, or false)')
    raise ClientError('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


def thinks(think: Think | None) -> bool:
    """ThinkValue.Bool: thinking is on (true, or any level)."""
    return think is True or isinstance(think, str)


def think_from_effort(effort: str | None) -> Think | None:
    """OpenAI's reasoning effort as Ollama's think (openai.thinkFromReasoningEffort): OpenAI's
    tiers past Ollama's ends are clamped to the nearest, "none" turns thinking off."""
    match effort:
        case None | "":
            return None
        case "none":
            return False
        case "minimal":
            return "low"
        case "low" | "medium" | "high" | "max":
            return effort
        case "xhigh" | "ultra":
            return "max"
    raise ClientError(f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", '
                      '"high", "xhigh", "ultra", "max", or "none")')


# ---- the tags around a reasoning trace

def infer_tags(root: n.ListNode) -> tuple[str, str]:
    """Ollama's InferTags: find `.Thinking` inside a range over .Messages, go up to the nearest
    list and take its first and last text nodes (trimmed) as the opening and closing tags. The
    last such reference wins, as in Ollama's walk."""
    found = ("", "")

    def visit(node: n.Node | None, ancestors: list[n.Node]) -> None:
        nonlocal found
        if node is None:
            return
        path = [*ancestors, node]
        if isinstance(node, n.FieldNode) and node.ident and node.ident[0] == "Thinking":
            ranges = [a for a in path if isinstance(a, n.BranchNode) and a.kind == "range"]
            if ranges and _pipe_uses(ranges[-1].pipe, "Messages"):
                lists = [a for a in path if isinstance(a, n.ListNode)]
                if lists:
                    first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
                    found = (first.text.strip() if isinstance(first, n.TextNode) else "",
                             last.text.strip() if isinstance(last, n.TextNode) else "")
        for child in _children(node):
            visit(child, path)

    visit(root, [])
    return found


def _children(node: n.Node) -> list[n.Node]:
    if isinstance(node, n.ListNode):
        return list(node.nodes)
    if isinstance(node, n.BranchNode):
        return [c for c in (node.pipe, node.list, node.else_list) if c is not None]
    if isinstance(node, (n.ActionNode,)):
        return [node.pipe]
    if isinstance(node, n.TemplateNode):
        return [node.pipe] if node.pipe is not None else []
    if isinstance(node, n.PipeNode):
        return list(node.cmds)
    if isinstance(node, n.CommandNode):
        return list(node.args)
    return []


def _pipe_uses(pipe: n.PipeNode, field: str) -> bool:
    stack: list[n.Node] = [pipe]
    while stack:
        node = stack.pop()
        if isinstance(node, n.FieldNode) and node.ident and node.ident[0] == field:
            return True
        stack.extend(_children(node))
    return False


# ---- the parser

class _State(Enum):
    LOOKING = auto()  # before the opening tag, only whitespace so far
    STARTED = auto()  # just after the opening tag: its whitespace is eaten
    THINKING = auto()
    ENDED = auto()  # just after the closing tag: its whitespace is eaten
    DONE = auto()


class ThinkingParser:
    """Ollama's thinking.Parser: add() returns (thinking, content) that can be sent now, and
    keeps back only what could still be the start of a tag. Output that does not begin with the
    opening tag is all content, whitespace included."""

    def __init__(self, opening: str, closing: str) -> None:
        self.opening, self.closing = opening, closing
        self.state = _State.LOOKING
        self._acc = ""

    def add(self, text: str) -> tuple[str, str]:
        self._acc += text
        thinking, content = [], []
        more = True
        while more:
            t, c, more = self._eat()
            thinking.append(t)
            content.append(c)
        return "".join(thinking), "".join(content)

    def flush(self) -> tuple[str, str]:
        """At the end: what was kept back (a part of a tag) as what it would have become
        (Ollama drops it)."""
        acc, self._acc = self._acc, ""
        return (acc, "") if self.state == _State.THINKING else ("", acc)

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        match self.state:
            case _State.LOOKING:
                trimmed = acc.lstrip()
                if trimmed.startswith(self.opening):
                    after = trimmed[len(self.opening):].lstrip()
                    self._acc = after
                    self.state = _State.THINKING if after else _State.STARTED
                    return "", "", True
                if self.opening.startswith(trimmed):  # a part of the tag, or only whitespace
                    return "", "", False
                self.state = _State.DONE  # no thinking: the text as it came, spaces and all
                self._acc = ""
                return "", acc, False
            case _State.STARTED:
                trimmed = acc.lstrip()
                self._acc = trimmed
                if not trimmed:
                    return "", "", False
                self.state = _State.THINKING
                return "", "", True
            case _State.THINKING:
                if self.closing in acc:
                    thinking, _, rest = acc.partition(self.closing)
                    rest = rest.lstrip()
                    self._acc = ""
                    self.state = _State.DONE if rest else _State.ENDED
                    return thinking, rest, False
                keep = _overlap(acc, self.closing)
                self._acc = acc[len(acc) - keep:] if keep else ""
                return acc[:len(acc) - keep], "", False
            case _State.ENDED:
                trimmed = acc.lstrip()
                self._acc = ""
                if trimmed:
                    self.state = _State.DONE
                return "", trimmed, False
        self._acc = ""
        return "", acc, False


def _overlap(text: str, tag: str) -> int:
    """The longest suffix of `text` that is a prefix of `tag`."""
    for size in range(min(len(tag), len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
