"""The executor of Go's text/template (exec.go): walk the tree, evaluate pipelines, print values.

It follows Go's rules where a template can see them: what is true, how fields, map keys and
methods are looked up, how a missing value prints ("<no value>"), variable scopes (an action's
variables live to the end of its block), range over slices, maps (in key order) and integers,
and/or short-circuiting and returning an operand, and the "missingkey" option.
"""

from __future__ import annotations

from typing import Any, NoReturn

from . import nodes as n
from .errors import GoTemplateError
from .funcs import BUILTINS, printable, truth
from .gofmt import quote, sprint
from .values import (
    MISSING,
    NIL,
    FuncError,
    GoStruct,
    Method,
    Uint8,
    indirect,
    indirect_interface,
    is_true,
    kind,
    methods_of,
    slot_value,
    type_name,
)

MAX_DEPTH = 10000  # nested {{template}} calls (Go allows 100000; Python's stack is shallower)
# A template can come with a request (/api/generate's `template`), so one that would run for ever
# ({{ range 1000000000 }}) or grow without end ($x = printf "%s%s" $x $x) is stopped instead.
# Go has no such limits; no real chat template comes near them (a 10,000-turn chat is ~0.5M steps).
MAX_STEPS = 5_000_000
MAX_TEXT = 64 << 20  # characters of output, and of any one string a function returns


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Executor:
    def __init__(self, trees: dict[str, n.ListNode], funcs: dict[str, Method], text: str,
                 missing_key: str = "invalid", name: str = "") -> None:
        self.trees = trees
        self.funcs = funcs  # the template's own functions; builtins are always there
        self.text = text
        self.missing_key = missing_key  # "invalid" (Go's default), "zero" or "error"
        self.name = name
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.node: Any = None
        self.depth = 0
        self.steps = 0
        self.size = 0

    # ---- errors
    def errorf(self, message: str) -> NoReturn:
        where = ""
        if self.node is not None and hasattr(self.node, "pos"):
            pos = self.node.pos
            line = 1 + self.text.count("\n", 0, pos)
            col = pos - (self.text.rfind("\n", 0, pos) + 1) if line > 1 else pos
            where = f":{line}:{col}: executing {quote(self.name)} at <{self.node}>"
        raise GoTemplateError(f"template: {self.name}{where}: {message}")

    # ---- variables
    def push(self, name: str, value: Any) -> None:
        self.vars.append([name, value])

    def mark(self) -> int:
        return len(self.vars)

    def pop(self, mark: int) -> None:
        del self.vars[mark:]

    def set_var(self, name: str, value: Any) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        self.errorf(f"undefined variable: {name}")

    def var_value(self, name: str) -> Any:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        self.errorf(f"undefined variable: {name}")

    # ---- walking
    def execute(self, root: n.ListNode, data: Any) -> str:
        self.vars = [["$", data]]
        try:
            self.walk(data, root)
        except RecursionError:
            raise GoTemplateError("template: exceeded maximum template depth") from None
        return "".join(self.out)

    def walk(self, dot: Any, node: Any) -> None:
        self.node = node
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.errorf(f"execution takes more than {MAX_STEPS} steps")
        if isinstance(node, n.ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node, value)
        elif isinstance(node, n.TextNode):
            self.emit(node.text)
        elif isinstance(node, n.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, n.BranchNode):
            if node.kind == "range":
                self.walk_range(dot, node)
            else:
                self.walk_if_or_with(node, dot)
        elif isinstance(node, n.TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, n.BreakNode):
            raise _Break()
        elif isinstance(node, n.ContinueNode):
            raise _Continue()
        elif isinstance(node, n.CommentNode):
            pass
        else:
            self.errorf(f"unknown node: {node}")

    def walk_if_or_with(self, node: n.BranchNode, dot: Any) -> None:
        mark = self.mark()
        try:
            value = self.eval_pipeline(dot, node.pipe)
            is_truthy, ok = is_true(indirect_interface(value))
            if not ok:
                self.errorf(f"if/with can't use {value}")
            if is_truthy:
                self.walk(value if node.kind == "with" else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            self.pop(mark)

    def walk_range(self, dot: Any, node: n.BranchNode) -> None:
        self.node = node
        outer = self.mark()
        try:
            value, _ = indirect(self.eval_pipeline(dot, node.pipe))
            mark = self.mark()
            decl = node.pipe.decl

            def one(index: Any, elem: Any) -> None:
                if decl:
                    if node.pipe.is_assign:
                        self.set_var(decl[0].ident[0], index if len(decl) > 1 else elem)
                    else:
                        self.vars[-1][1] = elem
                if len(decl) > 1:
                    if node.pipe.is_assign:
                        self.set_var(decl[1].ident[0], elem)
                    else:
                        self.vars[-2][1] = index
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                finally:
                    self.pop(mark)

            k = kind(value)
            ran = False
            try:
                if k == "slice":
                    elem_any = getattr(value, "elem_any", not isinstance(value, bytes))
                    for i, item in enumerate(value):
                        ran = True
                        one(i, Uint8(item) if isinstance(value, bytes) else slot_value(item, elem_any))
                elif k == "map":
                    elem_any = getattr(value, "elem_zero", None) is None
                    for key in sorted(value):
                        ran = True
                        one(key, slot_value(value[key], elem_any))
                elif k in ("int", "uint"):
                    if len(decl) > 1:
                        self.errorf(f"can't use {value} to iterate over more than one variable")
                    for i in range(int(value)):
                        ran = True
                        one(None, i)
                elif k != "invalid":
                    self.errorf(f"range can't iterate over {self._describe(value)}")
            except _Break:
                return
            if not ran and node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            self.pop(outer)

    def walk_template(self, dot: Any, node: n.TemplateNode) -> None:
        self.node = node
        tree = self.trees.get(node.name)
        if tree is None:
            self.errorf(f"template {quote(node.name)} not defined")
        if self.depth >= MAX_DEPTH:
            self.errorf(f"exceeded maximum template depth ({MAX_DEPTH})")
        value = self.eval_pipeline(dot, node.pipe)
        saved = self.vars
        self.vars = [["$", value]]  # no dynamic scoping: the callee sees only its own $
        self.depth += 1
        try:
            self.walk(value, tree)
        finally:
            self.depth -= 1
            self.vars = saved

    # ---- evaluation
    def eval_pipeline(self, dot: Any, pipe: n.PipeNode | None) -> Any:
        if pipe is None:
            return None
        self.node = pipe
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if value is NIL:  # an interface{} is dug into: a nil one is no value
                value = None
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.push(var.ident[0], value)
        return value

    def not_a_function(self, args: list, final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, n.FieldNode):
            return self.eval_field_chain(dot, dot, first, first.ident, cmd.args, final)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first, cmd.args, final)
        if isinstance(first, n.PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if isinstance(first, n.BoolNode):
            return first.value
        if isinstance(first, n.DotNode):
            return dot
        if isinstance(first, n.NilNode):
            self.errorf("nil is not a command")
        if isinstance(first, n.NumberNode):
            return self.ideal_constant(first)
        if isinstance(first, n.StringNode):
            return first.text
        self.errorf(f"can't evaluate command {first}")

    def ideal_constant(self, c: n.NumberNode) -> Any:
        self.node = c
        text = c.text
        if c.is_complex:
            return c.complex128
        is_hex_int = len(text) > 2 and text[0] == "0" and text[1] in "xX" and not any(ch in text for ch in "pP")
        if c.is_float and not is_hex_int and not text.startswith("'") and any(ch in text for ch in ".eEpP"):
            return c.float64
        if c.is_int:
            return c.int64
        if c.is_uint:
            self.errorf(f"{text} overflows int")
        return None

    def eval_chain(self, dot: Any, chain: n.ChainNode, args: list | None, final: Any) -> Any:
        self.node = chain
        if isinstance(chain.node, n.NilNode):
            self.errorf(f"indirection through explicit nil in {chain}")
        receiver = self.eval_arg(dot, None, chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.field, args, final)

    def eval_variable(self, dot: Any, var: n.VariableNode, args: list | None, final: Any) -> Any:
        self.node = var
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self.not_a_function(args or [var], final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final)

    def eval_field_chain(self, dot: Any, receiver: Any, node: Any, ident: list[str],
                         args: list | None, final: Any) -> Any:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, node, None, MISSING, receiver)
        return self.eval_field(dot, ident[-1], node, args, final, receiver)

    def eval_function(self, dot: Any, node: n.IdentifierNode, args: list | None, final: Any) -> Any:
        self.node = node
        name = node.ident
        fn = self.funcs.get(name)
        builtin = False
        if fn is None:
            fn = BUILTINS.get(name)
            builtin = fn is not None
        if fn is None:
            self.errorf(f"{quote(name)} is not a defined function")
        return self.eval_call(dot, fn, builtin, node, name, args, final)

    def eval_field(self, dot: Any, name: str, node: Any, args: list | None, final: Any,
                   receiver: Any) -> Any:
        if receiver is None:
            if self.missing_key == "error":
                self.errorf(f"nil data; no entry for key {quote(name)}")
            return None
        typ = type_name(receiver)
        receiver, is_nil = indirect(receiver)
        if receiver is NIL:
            self.errorf(f"nil pointer evaluating {typ}.{name}")
        method = methods_of(receiver).get(name)
        if method is not None:
            return self.eval_call(dot, method, False, node, name, args, final, receiver=receiver)
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if isinstance(receiver, GoStruct):
            f = receiver.stype.field(name)
            if f is not None:
                if is_nil:
                    self.errorf(f"nil pointer evaluating {typ}.{name}")
                if not name[:1].isupper():
                    self.errorf(f"{name} is an unexported field of struct type {typ}")
                if has_args:
                    self.errorf(f"{name} has arguments but cannot be invoked as function")
                return receiver.get(name)
        elif isinstance(receiver, dict):
            if has_args:
                self.errorf(f"{name} is not a method but has arguments")
            elem_zero = getattr(receiver, "elem_zero", None)  # a GoMap's; None: the element type is `any`
            if name in receiver:
                return slot_value(receiver[name], elem_zero is None)
            if self.missing_key == "zero":
                return NIL if elem_zero is None else elem_zero()
            if self.missing_key == "error":
                self.errorf(f"map has no entry for key {quote(name)}")
            return None
        self.errorf(f"can't evaluate field {name} in type {typ}")

    def eval_call(self, dot: Any, fn: Method, builtin: bool, node: Any, name: str,
                  args: list | None, final: Any, receiver: Any = MISSING) -> Any:
        args = list(args[1:]) if args is not None else []
        num_in = len(args) + (final is not MISSING)
        if fn.variadic:
            num_fixed = fn.nin - 1
            if num_in < num_fixed:
                self.errorf(f"wrong number of args for {name}: want at least {num_fixed} got {len(args)}")
        else:
            num_fixed = len(args)
            if num_in != fn.nin:
                self.errorf(f"wrong number of args for {name}: want {fn.nin} got {num_in}")
        if builtin and name in ("and", "or"):
            value: Any = None
            for arg in args:
                value = self.eval_arg(dot, "value", arg)
                if truth(value) == (name == "or"):
                    return value
            if final is not MISSING:
                value = final
            return value
        argv: list[Any] = []
        i = 0
        while i < num_fixed and i < len(args):
            argv.append(self.eval_arg(dot, fn.params[i], args[i]))
            i += 1
        if fn.variadic:
            while i < len(args):
                argv.append(self.eval_arg(dot, fn.params[-1], args[i]))
                i += 1
        if final is not MISSING:
            param = fn.params[num_in - 1] if fn.variadic and num_in - 1 < num_fixed else fn.params[-1]
            argv.append(self.validate_type(final, param))
        try:
            result = fn.fn(receiver, *argv) if receiver is not MISSING else fn.fn(*argv)
        except FuncError as exc:
            self.node = node
            self.errorf(f"error calling {name}: {exc}")
        if isinstance(result, str) and len(result) > MAX_TEXT:
            self.errorf(f"{name} returns more than {MAX_TEXT} characters")
        return result

    def validate_type(self, value: Any, param: str | None) -> Any:
        """Is the value assignable to the parameter ('value', 'any', 'string' or None: untyped)?"""
        if value is None:
            if param == "string":
                self.errorf("invalid value; expected string")
            return None
        if param == "string" and not isinstance(value, str):
            self.errorf(f"wrong type for value; expected string; got {type_name(value)}")
        if param == "any" and value is NIL:
            return None
        return value

    def eval_arg(self, dot: Any, param: str | None, node: Any) -> Any:
        self.node = node
        if isinstance(node, n.DotNode):
            return self.validate_type(dot, param)
        if isinstance(node, n.NilNode):
            if param in ("value", "any"):
                return None
            self.errorf(f"cannot assign nil to {param}")
        if isinstance(node, n.FieldNode):
            return self.validate_type(self.eval_field_chain(dot, dot, node, node.ident, [node], MISSING), param)
        if isinstance(node, n.VariableNode):
            return self.validate_type(self.eval_variable(dot, node, None, MISSING), param)
        if isinstance(node, n.PipeNode):
            return self.validate_type(self.eval_pipeline(dot, node), param)
        if isinstance(node, n.IdentifierNode):
            return self.validate_type(self.eval_function(dot, node, None, MISSING), param)
        if isinstance(node, n.ChainNode):
            return self.validate_type(self.eval_chain(dot, node, None, MISSING), param)
        if param == "string":
            if isinstance(node, n.StringNode):
                return node.text
            self.errorf(f"expected string; found {node}")
        if isinstance(node, n.BoolNode):
            return node.value
        if isinstance(node, n.NumberNode):
            return self.ideal_constant(node)
        if isinstance(node, n.StringNode):
            return node.text
        self.errorf(f"can't handle assignment of {node} to empty interface argument")

    # ---- output
    def print_value(self, node: Any, value: Any) -> None:
        self.node = node
        value, ok = printable(value)
        if not ok:
            self.errorf(f"can't print {node} of type {type_name(value)}")
        self.emit(sprint([value]))

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT:
            self.errorf(f"output exceeds {MAX_TEXT} characters")
        self.out.append(text)

    def _describe(self, value: Any) -> str:
        return sprint([value])

