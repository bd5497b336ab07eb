"""Go's text/template, in Python, for Ollama's TEMPLATEs (see ollama.py for Ollama's rules).

    tmpl = Template("{{ range .Items }}{{ . }} {{ end }}")
    tmpl.execute({"Items": ["a", "b"]})  # "a b "
"""

from __future__ import annotations

from typing import Any

from .errors import GoTemplateError
from .exec import Executor
from .funcs import BUILTINS
from .nodes import ListNode
from .parser import parse
from .values import Method


class Template:
    """A parsed template set: the main template (named `name`) and every {{define}}d one."""

    def __init__(self, text: str, funcs: dict[str, Method] | None = None, name: str = "") -> None:
        self.text = text
        self.name = name
        self.funcs = dict(funcs or {})
        self.trees: dict[str, ListNode] = parse(text, set(BUILTINS) | set(self.funcs), name)

    @property
    def root(self) -> ListNode:
        return self.trees[self.name]

    def execute(self, data: Any, missing_key: str = "invalid") -> str:
        """Run the main template on data; missing_key is Go's option: invalid, zero or error."""
        return Executor(self.trees, self.funcs, self.text, missing_key, self.name).execute(self.root, data)


__all__ = ["GoTemplateError", "Method", "Template"]
