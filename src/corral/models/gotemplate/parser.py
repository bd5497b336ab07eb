"""The parser of Go's text/template (text/template/parse/parse.go), production for production.

It checks what Go checks at parse time: functions must be known, variables declared,
{{break}}/{{continue}} inside a range, and only the first command of a pipeline may be a literal.
The result is a tree set: the main template under its name plus every {{define}}/{{block}}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import nodes as n
from .errors import GoTemplateError
from .gofmt import quote
from .lexer import Item, T, lex
from .literals import parse_number, unquote


class Tree:
    def __init__(self, name: str, text: str, funcs: frozenset[str], items: list[Item],
                 cursor: list[int], tree_set: dict[str, n.ListNode]) -> None:
        self.name = name
        self.text = text
        self.funcs = funcs
        self.items = items
        self.cursor = cursor  # shared with nested definitions: one token stream
        self.tree_set = tree_set
        self.vars = ["$"]
        self.range_depth = 0
        self.last: Item | None = None
        self.root: n.ListNode | None = None

    # ---- tokens
    def next(self) -> Item:
        item = self.items[min(self.cursor[0], len(self.items) - 1)]
        self.cursor[0] += 1
        self.last = item
        return item

    def backup(self, count: int = 1) -> None:
        self.cursor[0] -= count

    def peek(self) -> Item:
        return self.items[min(self.cursor[0], len(self.items) - 1)]

    def next_non_space(self) -> Item:
        while True:
            item = self.next()
            if item.typ != T.SPACE:
                return item

    def peek_non_space(self) -> Item:
        # As Go's: the spaces stay consumed, only the token after them is put back.
        item = self.next_non_space()
        self.backup()
        return item

    # ---- errors
    def errorf(self, message: str) -> None:
        line = self.last.line if self.last is not None else 1
        raise GoTemplateError(f"template: {self.name}:{line}: {message}")

    def expect(self, typ: T, context: str) -> Item:
        item = self.next_non_space()
        if item.typ != typ:
            self.unexpected(item, context)
        return item

    def unexpected(self, item: Item, context: str) -> None:
        if item.typ == T.ERROR:
            self.errorf(str(item))
        self.errorf(f"unexpected {item} in {context}")

    # ---- productions
    def parse(self) -> None:
        self.root = n.ListNode(self.peek().pos)
        while self.peek().typ != T.EOF:
            if self.peek().typ == T.LEFT_DELIM:
                mark = self.cursor[0]
                self.next()
                if self.next_non_space().typ == T.DEFINE:
                    sub = Tree("definition", self.text, self.funcs, self.items, self.cursor,
                               self.tree_set)
                    sub.parse_definition()
                    continue
                self.cursor[0] = mark
            node = self.text_or_action()
            if isinstance(node, (n.EndNode, n.ElseNode)):
                self.errorf(f"unexpected {node}")
            self.root.nodes.append(node)
        self.add()

    def add(self) -> None:
        assert self.root is not None  # called once parse() or parse_definition() has made it
        existing = self.tree_set.get(self.name)
        if existing is None or n.is_empty_tree(existing):
            self.tree_set[self.name] = self.root
        elif not n.is_empty_tree(self.root):
            self.errorf(f"template: multiple definition of template {quote(self.name)}")

    def parse_definition(self) -> None:
        context = "define clause"
        item = self.next_non_space()
        if item.typ not in (T.STRING, T.RAW_STRING):
            self.unexpected(item, context)
        self.name = self._unquote(item.val)
        self.expect(T.RIGHT_DELIM, context)
        self.root, end = self.item_list()
        if not isinstance(end, n.EndNode):
            self.errorf(f"unexpected {end} in {context}")
        self.add()

    def item_list(self) -> tuple[n.ListNode, n.Node]:
        items = n.ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != T.EOF:
            node = self.text_or_action()
            if isinstance(node, (n.EndNode, n.ElseNode)):
                return items, node
            items.nodes.append(node)
        self.errorf("unexpected EOF")
        raise AssertionError("unreachable")

    def text_or_action(self) -> n.Node:
        item = self.next_non_space()
        if item.typ == T.TEXT:
            return n.TextNode(item.pos, item.val)
        if item.typ == T.LEFT_DELIM:
            return self.action()
        if item.typ == T.COMMENT:
            return n.CommentNode(item.pos, item.val)
        self.unexpected(item, "input")
        raise AssertionError("unreachable")

    def action(self) -> n.Node:
        item = self.next_non_space()
        control: dict[T, Callable[[], n.Node]] = {T.BLOCK: self.block_control, T.ELSE: self.else_control,
                   T.END: self.end_control, T.IF: lambda: self.branch("if"),
                   T.RANGE: lambda: self.branch("range"), T.TEMPLATE: self.template_control,
                   T.WITH: lambda: self.branch("with")}
        if item.typ in (T.BREAK, T.CONTINUE):
            word = "break" if item.typ == T.BREAK else "continue"
            after = self.next_non_space()
            if after.typ != T.RIGHT_DELIM:
                self.unexpected(after, "{{" + word + "}}")
            if self.range_depth == 0:
                self.errorf("{{" + word + "}} outside {{range}}")
            return n.BreakNode(item.pos, item.line) if word == "break" else n.ContinueNode(item.pos, item.line)
        if item.typ in control:
            return control[item.typ]()
        self.backup()
        head = self.peek()
        return n.ActionNode(head.pos, head.line, self.pipeline("command", T.RIGHT_DELIM))

    def pipeline(self, context: str, end: T) -> n.PipeNode:
        head = self.peek_non_space()
        pipe = n.PipeNode(head.pos, head.line)
        while True:  # declarations: "$x :=", "$x =", "$i, $e :=" (range only)
            v = self.peek_non_space()
            if v.typ != T.VARIABLE:
                break
            mark = self.cursor[0]
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (T.ASSIGN, T.DECLARE):
                pipe.is_assign = nxt.typ == T.ASSIGN
                self.next_non_space()
                pipe.decl.append(n.VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
                break
            if nxt.typ == T.CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(n.VariableNode(v.pos, [v.val]))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (T.VARIABLE, T.RIGHT_DELIM, T.RIGHT_PAREN):
                        continue  # the second variable of a range
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            self.cursor[0] = mark  # "$x" is an operand, not a declaration
            break
        while True:
            item = self.next_non_space()
            if item.typ == end:
                self.check_pipeline(pipe, context)
                return pipe
            if item.typ in (T.BOOL, T.CHAR_CONSTANT, T.COMPLEX, T.DOT, T.FIELD, T.IDENTIFIER,
                            T.NUMBER, T.NIL, T.RAW_STRING, T.STRING, T.VARIABLE, T.LEFT_PAREN):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(item, context)

    def check_pipeline(self, pipe: n.PipeNode, context: str) -> None:
        if not pipe.cmds:
            self.errorf(f"missing value for {context}")
        for i, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], (n.BoolNode, n.DotNode, n.NilNode, n.NumberNode, n.StringNode)):
                self.errorf(f"non executable command in pipeline stage {i + 2}")

    def branch(self, context: str) -> n.BranchNode:
        depth = len(self.vars)
        try:
            pipe = self.pipeline(context, T.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, nxt = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_list = None
            if isinstance(nxt, n.ElseNode):
                # "{{else if x}}" is "{{else}}{{if x}}...{{end}}{{end}}" (and "else with" alike).
                if context == "if" and self.peek().typ == T.IF:
                    self.next()
                    else_list = n.ListNode(nxt.pos, [self.branch("if")])
                elif context == "with" and self.peek().typ == T.WITH:
                    self.next()
                    else_list = n.ListNode(nxt.pos, [self.branch("with")])
                else:
                    else_list, nxt = self.item_list()
                    if not isinstance(nxt, n.EndNode):
                        self.errorf(f"expected end; found {nxt}")
            return n.BranchNode(context, pipe.pos, pipe.line, pipe, body, else_list)
        finally:
            del self.vars[depth:]

    def end_control(self) -> n.EndNode:
        return n.EndNode(self.expect(T.RIGHT_DELIM, "end").pos)

    def else_control(self) -> n.ElseNode:
        peek = self.peek_non_space()
        if peek.typ in (T.IF, T.WITH):
            return n.ElseNode(peek.pos, peek.line)
        item = self.expect(T.RIGHT_DELIM, "else")
        return n.ElseNode(item.pos, item.line)

    def block_control(self) -> n.TemplateNode:
        context = "block clause"
        item = self.next_non_space()
        name = self.template_name(item, context)
        pipe = self.pipeline(context, T.RIGHT_DELIM)
        block = Tree(name, self.text, self.funcs, self.items, self.cursor, self.tree_set)
        block.root, end = block.item_list()
        if not isinstance(end, n.EndNode):
            self.errorf(f"unexpected {end} in {context}")
        block.add()
        return n.TemplateNode(item.pos, item.line, name, pipe)

    def template_control(self) -> n.TemplateNode:
        context = "template clause"
        item = self.next_non_space()
        name = self.template_name(item, context)
        pipe = None
        if self.next_non_space().typ != T.RIGHT_DELIM:
            self.backup()
            pipe = self.pipeline(context, T.RIGHT_DELIM)
        return n.TemplateNode(item.pos, item.line, name, pipe)

    def template_name(self, item: Item, context: str) -> str:
        if item.typ not in (T.STRING, T.RAW_STRING):
            self.unexpected(item, context)
        return self._unquote(item.val)

    def command(self) -> n.CommandNode:
        cmd = n.CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            item = self.next()
            if item.typ == T.SPACE:
                continue
            if item.typ in (T.RIGHT_DELIM, T.RIGHT_PAREN):
                self.backup()
            elif item.typ != T.PIPE:
                self.unexpected(item, "operand")
            break
        if not cmd.args:
            self.errorf("empty command")
        return cmd

    def operand(self) -> n.Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == T.FIELD:
            chain = n.ChainNode(self.peek().pos, node)
            while self.peek().typ == T.FIELD:
                chain.field.append(self.next().val[1:])
            if isinstance(node, n.FieldNode):
                node = n.FieldNode(chain.pos, node.ident + chain.field)
            elif isinstance(node, n.VariableNode):
                node = n.VariableNode(chain.pos, node.ident + chain.field)
            elif isinstance(node, (n.BoolNode, n.StringNode, n.NumberNode, n.NilNode, n.DotNode)):
                self.errorf(f"unexpected . after term {quote(str(node))}")
            else:
                node = chain
        return node

    def term(self) -> n.Node | None:
        item = self.next_non_space()
        typ = item.typ
        if typ == T.IDENTIFIER:
            if item.val not in self.funcs:
                self.errorf(f"function {quote(item.val)} not defined")
            return n.IdentifierNode(item.pos, item.val)
        if typ == T.DOT:
            return n.DotNode(item.pos)
        if typ == T.NIL:
            return n.NilNode(item.pos)
        if typ == T.VARIABLE:
            ident = item.val.split(".")
            if ident[0] not in self.vars:
                self.errorf(f"undefined variable {quote(ident[0])}")
            return n.VariableNode(item.pos, ident)
        if typ == T.FIELD:
            return n.FieldNode(item.pos, item.val[1:].split("."))
        if typ == T.BOOL:
            return n.BoolNode(item.pos, item.val == "true")
        if typ in (T.CHAR_CONSTANT, T.COMPLEX, T.NUMBER):
            try:
                return parse_number(item.pos, item.val, typ)
            except ValueError as exc:
                self.errorf(str(exc))
        if typ == T.LEFT_PAREN:
            return self.pipeline("parenthesized pipeline", T.RIGHT_PAREN)
        if typ in (T.STRING, T.RAW_STRING):
            return n.StringNode(item.pos, item.val, self._unquote(item.val))
        self.backup()
        return None

    def _unquote(self, quoted: str) -> str:
        try:
            return unquote(quoted)
        except ValueError as exc:
            self.errorf(str(exc))
            raise AssertionError("unreachable") from None


def parse(text: str, funcs: Iterable[str], name: str = "") -> dict[str, n.ListNode]:
    """Every template the text defines, by name; the main one under `name`."""
    tree_set: dict[str, n.ListNode] = {}
    items = lex(text)
    tree = Tree(name, text, frozenset(funcs), items, [0], tree_set)
    tree.parse()
    return tree_set
