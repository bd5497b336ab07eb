"""Ollama's template rules (template/template.go): its helper functions, Parse, Vars and Execute.

Execute picks one of three ways, as Ollama does:
  * prompt and suffix both set (fill-in-the-middle): the template sees Prompt, Suffix, Response.
  * the template mentions .Messages: it runs once over System, Messages, Tools (all messages,
    consecutive ones of a role merged, except tool messages).
  * otherwise (a "legacy" template of .System/.Prompt/.Response): it runs once per finished
    user/assistant turn, then once more for the last turn with everything from the first
    .Response on cut away, so the prompt ends where the model's reply begins.
Parse appends {{ .Response }} to a template that mentions neither .Messages nor .Response.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import nodes as n
from . import ollama_values as ov
from .errors import GoTemplateError
from .exec import Executor
from .funcs import BUILTINS
from .gojson import UnsupportedValue, marshal
from .parser import parse as parse_trees
from .values import GoMap, GoStruct, Method


def _json(v: Any) -> str:
    try:
        return marshal(v)
    except UnsupportedValue:
        return ""  # Ollama ignores json.Marshal's error: the output is empty


def _current_date(*_format: str) -> str:
    return datetime.now().strftime("%Y-%m-%d")  # the format argument is accepted and ignored


def _yesterday_date(*_format: str) -> str:
    return (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d")


def _to_typescript_type(v: Any) -> str:
    if isinstance(v, GoStruct) and v.stype is ov.TOOL_PROPERTY and v.values is not None:
        return ov.to_typescript_type(v)
    return "any"


FUNCS: dict[str, Method] = {
    "json": Method(_json, ("any",)),
    "currentDate": Method(_current_date, ("string",), variadic=True),
    "yesterdayDate": Method(_yesterday_date, ("string",), variadic=True),
    "toTypeScriptType": Method(_to_typescript_type, ("any",)),
}


def identifiers(node: Any) -> list[str]:
    """Ollama's Identifiers: the field and variable names a node mentions (not in chains)."""
    if isinstance(node, n.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, n.TemplateNode):
        if node.pipe is None:
            raise GoTemplateError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, n.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, n.BranchNode):
        names = identifiers(node.pipe)
        for body in (node.list, node.else_list):
            if body is not None:
                names += identifiers(body)
        return names
    if isinstance(node, n.PipeNode):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, (n.FieldNode, n.VariableNode)):
        return list(node.ident)
    return []


def _response_node() -> n.ActionNode:
    field = n.FieldNode(0, ["Response"])
    return n.ActionNode(0, 0, n.PipeNode(0, 0, cmds=[n.CommandNode(0, [field])]))


class OllamaTemplate:
    """A TEMPLATE parsed as Ollama parses it (template.Parse)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.trees = parse_trees(text, set(BUILTINS) | set(FUNCS))
        names: set[str] = set()
        for tree in self.trees.values():
            for node in tree.nodes:
                names.update(name.lower() for name in identifiers(node))
        if "messages" not in names and "response" not in names:
            self.trees[""].nodes.append(_response_node())
            names.add("response")
        self.vars = sorted(names)  # as Ollama's Vars() reads them after Parse

    def _run(self, data: dict[str, Any]) -> str:
        # Ollama's templates are parsed with Option("missingkey=zero").
        return Executor(self.trees, FUNCS, self.text, "zero").execute(self.trees[""], GoMap(data))

    def execute(self, values: Values) -> str:
        system, msgs = collate(values.messages)
        think = {"Think": values.think, "ThinkLevel": values.think_level, "IsThinkSet": values.is_think_set}
        if values.prompt and values.suffix:
            return self._run({"Prompt": values.prompt, "Suffix": values.suffix, "Response": "", **think})
        if "messages" in self.vars:
            return self._run({"System": system, "Messages": ov.messages(msgs),
                              "Tools": ov.tools(values.tools), "Response": "", **think})
        return self._execute_legacy(msgs, think)

    def _execute_legacy(self, msgs: list[dict[str, Any]], think: dict[str, Any]) -> str:
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(self._run({**turn, **think}))
            turn.update(System="", Prompt="", Response="")

        for m in msgs:
            role, content = m.get("role"), m.get("content") or ""
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        # The last turn: the template up to its first .Response, run as a new template that has
        # neither Ollama's functions nor its {{define}}s nor missingkey=zero (as in Ollama).
        root = delete_after_response(n.copy_tree(self.trees[""]))
        last = Executor({"": root}, {}, self.text, "invalid")
        out.append(last.execute(root, GoMap({**turn, **think})))
        return "".join(out)


def delete_after_response(root: n.ListNode) -> n.ListNode:
    """Ollama's deleteNode: keep the first .Response field, drop every node walked after it.

    Nodes are walked in Ollama's order: a branch's condition is not walked, an action whose
    pipeline loses a whole command goes, and a branch with an else after the cut is the nil
    assertion that panics in Ollama (an error here).
    """
    cut = False

    def delete(node: Any) -> bool:
        nonlocal cut
        if isinstance(node, n.FieldNode) and "Response" in node.ident:
            cut = True
            return False
        return cut

    def walk(node: Any) -> Any:
        if delete(node):
            return None
        if isinstance(node, n.ListNode):
            node.nodes = [c for c in (walk(child) for child in node.nodes) if c is not None]
        elif isinstance(node, n.BranchNode):
            node.list = walk(node.list)
            if node.else_list is not None:
                node.else_list = walk(node.else_list)
                if node.else_list is None:
                    raise GoTemplateError("template: the .Response cut leaves an {{else}} without a body")
        elif isinstance(node, n.ActionNode):
            pipe = walk(node.pipe)
            if pipe is None:
                return None
            node.pipe = pipe
        elif isinstance(node, n.PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = [a for a in (walk(arg) for arg in cmd.args) if a is not None]
                if not args:
                    return None
                cmd.args = args
                cmds.append(cmd)
            if not cmds:
                return None
            node.cmds = cmds
        return node

    return walk(root)


def collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's collate: every system message's content joined, and consecutive messages of one
    role (other than tool) merged into the first, their contents joined by a blank line."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for m in msgs:
        content = m.get("content") or ""
        if m.get("role") == "system":
            system.append(content)
        if collated and collated[-1].get("role") == m.get("role") and m.get("role") != "tool":
            collated[-1]["content"] = (collated[-1].get("content") or "") + "\n\n" + content
        else:
            collated.append(dict(m))
    return "\n\n".join(system), collated


@dataclass
class Values:
    """Ollama's template.Values."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    prompt: str = ""
    suffix: str = ""
    think: bool = False
    think_level: str = ""
    is_think_set: bool = False

    @classmethod
    def with_think(cls, messages: list[dict[str, Any]], think: bool | str | None, **kw: Any) -> Values:
        """Think from a request's `think` (true/false or "high"/"medium"/"low"/"max"), as Ollama."""
        if think is None:
            return cls(messages, **kw)
        if isinstance(think, bool):
            return cls(messages, think=think, think_level="medium" if think else "",
                       is_think_set=True, **kw)
        return cls(messages, think=think in ("high", "medium", "low", "max"), think_level=think,
                   is_think_set=True, **kw)
