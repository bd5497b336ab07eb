"""The one place a model's output is split: thinking, content and tool calls, as it streams.

Pure logic, fed text chunks. Thinking comes first (Ollama's thinking parser, with the tags its
template shows); what is not thinking goes to the tool-call parser when the request offered tools
(Ollama runs them in this order too). What can be sent is returned at once; only a possible
tag's first characters, or a call that has not ended, wait for the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.models.template import go_template_tree
from corral.models.thinking import ThinkingParser, infer_tags
from corral.models.tool_calls import ToolCall, ToolCallParser, go_tool_tag, jinja_tool_tag

JINJA_THINKING_TAGS = ("<think>", "</think>")


@dataclass(frozen=True, slots=True)
class Content:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str


Piece = Content | Reasoning | ToolCall


@dataclass(frozen=True)
class TemplateTags:
    """What a template shows about its model's output: the tags around thinking ("" when
    none) and the text before a tool call ("{": a bare JSON call)."""

    think_open: str = ""
    think_close: str = ""
    tool: str = "{"

    @classmethod
    def of(cls, go_template: str | None, jinja_template: str | None) -> TemplateTags:
        if go_template:
            root = go_template_tree(go_template)
            opening, closing = infer_tags(root)
            return cls(opening, closing, go_tool_tag(root))
        thinks = bool(jinja_template) and all(t in jinja_template for t in JINJA_THINKING_TAGS)  # type: ignore[operator]
        opening, closing = JINJA_THINKING_TAGS if thinks else ("", "")
        return cls(opening, closing, jinja_tool_tag(jinja_template))


@dataclass(frozen=True)
class OutputFormat:
    """What one request's output is parsed for."""

    tags: TemplateTags = field(default_factory=TemplateTags)
    thinking: bool = False  # the request thinks (and the template has tags)
    prompt: str = ""  # a prompt ending in the opening tag starts inside thinking
    tools: frozenset[str] = frozenset()  # the names of the tools offered


class OutputParser:
    def __init__(self, fmt: OutputFormat) -> None:
        tags = fmt.tags
        self._thinking: ThinkingParser | None = None
        if fmt.thinking and tags.think_open and tags.think_close:
            self._thinking = ThinkingParser(tags.think_open, tags.think_close)
            if fmt.prompt.strip().endswith(tags.think_open):
                self._thinking.add(tags.think_open)
        self._tools = ToolCallParser(fmt.tools, tags.tool) if fmt.tools else None

    @property
    def idle(self) -> bool:
        """Nothing to split: the output is all content."""
        return self._thinking is None and self._tools is None

    @property
    def called(self) -> bool:
        return self._tools is not None and self._tools.called

    def add(self, text: str) -> list[Piece]:
        if self._thinking is None:
            return self._content(text)
        thinking, content = self._thinking.add(text)
        return [*([Reasoning(thinking)] if thinking else []), *self._content(content)]

    def flush(self) -> list[Piece]:
        pieces: list[Piece] = []
        if self._thinking is not None:
            thinking, content = self._thinking.flush()
            pieces += [Reasoning(thinking)] if thinking else []
            pieces += self._content(content)
        if self._tools is not None:
            pieces += [p if isinstance(p, ToolCall) else Content(p) for p in self._tools.flush()]
        return pieces

    def _content(self, text: str) -> list[Piece]:
        if self._tools is None:
            return [Content(text)] if text else []
        return [p if isinstance(p, ToolCall) else Content(p) for p in self._tools.add(text)] if text else []
