"""text/template's builtin functions (funcs.go): comparisons, index, slice, len, not, print*,
html, js, urlquery. `and` and `or` short-circuit, so the executor runs them itself."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

from .gofmt import sprint, sprintf, sprintln
from .values import (
    NIL,
    FuncError,
    GoSlice,
    GoStruct,
    Method,
    Uint8,
    indirect,
    indirect_interface,
    is_nil_value,
    is_true,
    kind,
    length,
    slot_value,
    type_name,
)

_BASIC = {"bool", "int", "uint", "float", "complex", "string"}


def truth(v: Any) -> bool:
    return is_true(indirect_interface(v))[0]


def _basic_kind(v: Any) -> str:
    k = kind(v)
    return k if k in _BASIC else "invalid"


def _is_nil(v: Any) -> bool:
    return v is None or is_nil_value(v)


def eq(arg1: Any, *arg2: Any) -> bool:
    arg1 = indirect_interface(arg1)
    if not arg2:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in arg2:
        arg = indirect_interface(arg)
        k2 = _basic_kind(arg)
        if k1 != k2:
            if {k1, k2} == {"int", "uint"}:
                same = arg1 >= 0 and arg >= 0 and int(arg1) == int(arg)
            elif arg1 is not None and arg is not None:
                raise FuncError(f"incompatible types for comparison: {type_name(arg1)} and {type_name(arg)}")
            else:
                same = False
        elif k1 != "invalid":
            same = arg1 == arg
        else:
            if not (kind(arg1) == kind(arg) or arg1 is None or arg is None):
                raise FuncError(f"non-comparable types {arg1}: {type_name(arg1)}, {type_name(arg)}: {arg}")
            if _is_nil(arg1) or _is_nil(arg):
                same = _is_nil(arg) == _is_nil(arg1)
            elif isinstance(arg, GoStruct) and arg.ptr and isinstance(arg1, GoStruct):
                same = arg1.values is arg.values
            else:
                raise FuncError(f"non-comparable type {arg}: {type_name(arg)}")
        if same:
            return True
    return False


def ne(arg1: Any, arg2: Any) -> bool:
    return not eq(arg1, arg2)


def lt(arg1: Any, arg2: Any) -> bool:
    arg1, arg2 = indirect_interface(arg1), indirect_interface(arg2)
    k1, k2 = _basic_kind(arg1), _basic_kind(arg2)
    if "invalid" in (k1, k2):
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        if {k1, k2} == {"int", "uint"}:
            return int(arg1) < int(arg2)
        raise FuncError(f"incompatible types for comparison: {type_name(arg1)} and {type_name(arg2)}")
    if k1 in ("bool", "complex"):
        raise FuncError("invalid type for comparison")
    return arg1 < arg2


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def gt(arg1: Any, arg2: Any) -> bool:
    return not le(arg1, arg2)


def ge(arg1: Any, arg2: Any) -> bool:
    return not lt(arg1, arg2)


def not_(arg: Any) -> bool:
    return not truth(arg)


def _index_arg(index: Any, cap: int) -> int:
    k = kind(index)
    if k == "invalid":
        raise FuncError("cannot index slice/array with nil")
    if k not in ("int", "uint"):
        raise FuncError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > cap:
        raise FuncError(f"index out of range: {index}")
    return int(index)


def _element(item: Any, i: int) -> Any:
    if isinstance(item, str):
        data = item.encode("utf-8", "surrogatepass")
        if i >= len(data):
            raise FuncError("reflect: string index out of range")
        return Uint8(data[i])
    if i >= len(item):
        raise FuncError("reflect: slice index out of range")
    if isinstance(item, bytes):
        return Uint8(item[i])
    return slot_value(item[i], getattr(item, "elem_any", True))


def index(item: Any, *indexes: Any) -> Any:
    item = indirect_interface(item)
    if item is None:
        raise FuncError("index of untyped nil")
    for idx in indexes:
        idx = indirect_interface(idx)
        item, is_nil = indirect(item)
        if is_nil:
            raise FuncError("index of nil pointer")
        k = kind(item)
        if k in ("slice", "string"):
            item = _element(item, _index_arg(idx, length(item)))
        elif k == "map":
            if idx is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(idx, str):
                raise FuncError(f"value has type {type_name(idx)}; should be string")
            if idx in item:
                item = slot_value(item[idx], getattr(item, "elem_zero", None) is None)
            elif getattr(item, "elem_zero", None) is not None:
                item = item.elem_zero()
            else:
                item = NIL
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    item = indirect_interface(item)
    if item is None:
        raise FuncError("slice of untyped nil")
    item, is_nil = indirect(item)
    if is_nil:
        raise FuncError("slice of nil pointer")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    k = kind(item)
    if k == "string":
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
    elif k != "slice":
        raise FuncError(f"can't slice item of type {type_name(item)}")
    cap = length(item)
    idx = [0, cap, cap]
    for i, x in enumerate(indexes):
        idx[i] = _index_arg(indirect_interface(x), cap)
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")[idx[0]:idx[1]].decode("utf-8", "replace")
    if isinstance(item, bytes):
        return item[idx[0]:idx[1]]
    part = item[idx[0]:idx[1]]
    if isinstance(item, GoSlice):
        return GoSlice(part, item.type_name, item.elem_any, item.methods, nil=item.nil)
    return part


def len_(item: Any) -> int:
    item, is_nil = indirect(item)
    if is_nil and item is not NIL:
        raise FuncError("len of nil pointer")
    k = kind(item)
    if k in ("slice", "map", "string"):
        return length(item)
    if item is None or item is NIL:
        raise FuncError("len of untyped nil")
    raise FuncError(f"len of type {type_name(item)}")


def printable(v: Any) -> tuple[Any, bool]:
    """printableValue: through a pointer; nothing prints as <no value>; funcs are not printable."""
    if isinstance(v, GoStruct) and v.ptr and v.values is not None:
        v = v.elem()
    if v is None or v is NIL:
        return "<no value>", True
    if kind(v) == "func":
        return None, False
    return v, True


def _eval_args(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint([printable(a)[0] if printable(a)[1] else a for a in args])


def html(*args: Any) -> str:
    s = _eval_args(args)
    table = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
    return "".join(table.get(c, c) for c in s)


def js(*args: Any) -> str:
    s = _eval_args(args)
    table = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
             "=": "\\u003D"}
    out = []
    for c in s:
        if c in table:
            out.append(table[c])
        elif c < " ":
            out.append(f"\\u00{ord(c):02X}")
        elif c >= "\x80" and not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return quote_plus(_eval_args(args), safe="")


def _printf(fmt: str, *args: Any) -> str:
    return sprintf(fmt, list(args))


def call(fn: Any, *args: Any) -> Any:
    fn = indirect_interface(fn)
    if fn is None:
        raise FuncError("call of nil")
    if not isinstance(fn, Method):
        raise FuncError(f"non-function of type {type_name(fn)}")
    return fn.fn(*args)


BUILTINS: dict[str, Method] = {
    "and": Method(lambda *a: None, ("value", "value"), variadic=True),  # run by the executor
    "or": Method(lambda *a: None, ("value", "value"), variadic=True),  # run by the executor
    "call": Method(call, ("value", "value"), variadic=True),
    "html": Method(html, ("any",), variadic=True),
    "index": Method(index, ("value", "value"), variadic=True),
    "slice": Method(slice_, ("value", "value"), variadic=True),
    "js": Method(js, ("any",), variadic=True),
    "len": Method(len_, ("value",)),
    "not": Method(not_, ("value",)),
    "print": Method(lambda *a: sprint(list(a)), ("any",), variadic=True),
    "printf": Method(_printf, ("string", "any"), variadic=True),
    "println": Method(lambda *a: sprintln(list(a)), ("any",), variadic=True),
    "urlquery": Method(urlquery, ("any",), variadic=True),
    "eq": Method(eq, ("value", "value"), variadic=True),
    "ge": Method(ge, ("value", "value")),
    "gt": Method(gt, ("value", "value")),
    "le": Method(le, ("value", "value")),
    "lt": Method(lt, ("value", "value")),
    "ne": Method(ne, ("value", "value")),
}
