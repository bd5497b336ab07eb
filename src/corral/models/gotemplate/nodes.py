"""Parse-tree nodes, shaped like Go's text/template/parse nodes.

Ollama walks and rewrites these trees (its Vars, Identifiers and deleteNode), so the shapes follow
Go's: an action holds a pipe, a pipe holds commands, a command holds operands, and if/range/with
are branches with a pipe, a list and an optional else list. `str()` mirrors Go's String() closely
enough for error messages.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass
class ListNode:
    pos: int
    nodes: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


@dataclass
class TextNode:
    pos: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class CommentNode:
    pos: int
    text: str

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


@dataclass
class VariableNode:
    pos: int
    ident: list[str]  # "$x.A.B" -> ["$x", "A", "B"]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass
class IdentifierNode:
    pos: int
    ident: str  # a function name

    def __str__(self) -> str:
        return self.ident


@dataclass
class DotNode:
    pos: int

    def __str__(self) -> str:
        return "."


@dataclass
class NilNode:
    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass
class FieldNode:
    pos: int
    ident: list[str]  # ".A.B" -> ["A", "B"]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass
class ChainNode:
    pos: int
    node: Node  # "(pipe).A.B" or "func.A": the term the fields apply to
    field: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + f for f in self.field)


@dataclass
class BoolNode:
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass
class NumberNode:
    pos: int
    text: str
    is_int: bool = False
    is_uint: bool = False
    is_float: bool = False
    is_complex: bool = False
    int64: int = 0
    uint64: int = 0
    float64: float = 0.0
    complex128: complex = 0j

    def __str__(self) -> str:
        return self.text


@dataclass
class StringNode:
    pos: int
    quoted: str  # as written, quotes included
    text: str  # the unquoted value

    def __str__(self) -> str:
        return self.quoted


@dataclass
class CommandNode:
    pos: int
    args: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass
class PipeNode:
    pos: int
    line: int
    is_assign: bool = False  # "$x = ..." rather than "$x := ..."
    decl: list[VariableNode] = field(default_factory=list)
    cmds: list[CommandNode] = field(default_factory=list)

    def __str__(self) -> str:
        text = ""
        if self.decl:
            text = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return text + " | ".join(str(c) for c in self.cmds)


@dataclass
class ActionNode:
    pos: int
    line: int
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass
class BranchNode:
    """{{if}}, {{range}} and {{with}}: Go's IfNode/RangeNode/WithNode around a BranchNode."""

    kind: str  # "if" | "range" | "with"
    pos: int
    line: int
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None = None

    def __str__(self) -> str:
        text = "{{" + self.kind + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            text += "{{else}}" + str(self.else_list)
        return text + "{{end}}"


@dataclass
class TemplateNode:
    pos: int
    line: int
    name: str
    pipe: PipeNode | None = None

    def __str__(self) -> str:
        quoted = '"' + self.name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if self.pipe is None:
            return "{{template " + quoted + "}}"
        return "{{template " + quoted + " " + str(self.pipe) + "}}"


@dataclass
class BreakNode:
    pos: int
    line: int

    def __str__(self) -> str:
        return "{{break}}"


@dataclass
class ContinueNode:
    pos: int
    line: int

    def __str__(self) -> str:
        return "{{continue}}"


@dataclass
class EndNode:  # parser-internal: never in a finished tree
    pos: int

    def __str__(self) -> str:
        return "{{end}}"


@dataclass
class ElseNode:  # parser-internal: never in a finished tree
    pos: int
    line: int

    def __str__(self) -> str:
        return "{{else}}"


Node = (ListNode | TextNode | CommentNode | VariableNode | IdentifierNode | DotNode | NilNode
        | FieldNode | ChainNode | BoolNode | NumberNode | StringNode | CommandNode | PipeNode
        | ActionNode | BranchNode | TemplateNode | BreakNode | ContinueNode | EndNode | ElseNode)


def copy_tree(node: ListNode) -> ListNode:
    """A deep copy, for rewrites (Ollama's Root.Copy() before deleteNode)."""
    return copy.deepcopy(node)


def is_empty_tree(node: Node | None) -> bool:
    """Go's IsEmptyTree: nothing but space and comments (a later definition may replace it)."""
    if node is None or isinstance(node, CommentNode):
        return True
    if isinstance(node, ListNode):
        return all(is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return node.text.strip(" \t\n\v\f\r\x85\xa0") == ""
    return False
