"""Go values as the executor sees them, and the few reflect operations it needs.

Plain Python values stand for what Go's encoding/json puts in an `any`: str, bool, float
(every JSON number is a float64 in Go), None, list ([]interface {}) and dict
(map[string]interface {}). Go's own types are modelled where a template can tell them apart:
int (a Python int), uint8 (Uint8), typed slices and maps (GoSlice, GoMap: a type name, an
element kind, methods such as String), structs (GoStruct: declared fields, methods, a pointer
flag). Two kinds of "nothing" differ in Go and here: None is an invalid reflect.Value (a missing
value), NIL is a nil interface value (a nil element of a []any, a missing key of a map[string]any
under missingkey=zero); a field of a nil interface is an error, a field of nothing is nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class _Nil:
    """A nil interface value (reflect Kind Interface, IsNil)."""

    _instance: _Nil | None = None

    def __new__(cls) -> _Nil:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NIL"


NIL = _Nil()


class _Missing:
    """No value at all: Go's missingVal, the absent final argument of a pipeline stage."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class Uint8(int):
    """A Go byte: what indexing a string or a []byte yields."""


@dataclass(frozen=True)
class Method:
    """A Go method or function: `fn(*args)`; params are 'value' (reflect.Value), 'any' or 'string'."""

    fn: Callable[..., Any]
    params: tuple[str, ...] = ()
    variadic: bool = False  # the last param repeats

    @property
    def nin(self) -> int:
        return len(self.params)


class FuncError(Exception):
    """A function or method returned a non-nil error (Go: "error calling NAME: ...")."""


@dataclass(frozen=True)
class Field:
    name: str
    slot: str = "value"  # "any": None is a nil interface; "ptr": None is a nil pointer
    json: str | None = None  # the JSON key (None: the field name)
    omitempty: bool = False


@dataclass(frozen=True)
class StructType:
    name: str  # as reflect prints it, e.g. "template.templateMessage"
    fields: tuple[Field, ...]
    methods: dict[str, Method] = field(default_factory=dict)
    marshal_json: Callable[[Any], str] | None = None  # a MarshalJSON method

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


class GoStruct:
    """A struct value, or a pointer to one (`ptr`; `values is None` for a nil pointer)."""

    __slots__ = ("ptr", "stype", "values")

    def __init__(self, stype: StructType, values: dict[str, Any] | None, ptr: bool = False) -> None:
        self.stype = stype
        self.values = values
        self.ptr = ptr

    def get(self, name: str) -> Any:
        assert self.values is not None
        f = self.stype.field(name)
        value = self.values.get(name)
        if value is None and f is not None and f.slot == "any":
            return NIL
        return value

    def elem(self) -> GoStruct:
        return GoStruct(self.stype, self.values, ptr=False)

    def __repr__(self) -> str:
        return f"{'*' if self.ptr else ''}{self.stype.name}{self.values!r}"


class GoSlice(list):
    """A typed slice: its type name, whether its elements are `any`, its methods, nil or not."""

    def __init__(self, items: Any = (), type_name: str = "[]interface {}", elem_any: bool = True,
                 methods: dict[str, Method] | None = None, nil: bool = False) -> None:
        super().__init__(items)
        self.type_name = type_name
        self.elem_any = elem_any
        self.methods = methods or {}
        self.nil = nil and not self
        self.marshal: Callable[[Any], str] | None = None  # a MarshalJSON method


class GoMap(dict):
    """A typed map with string keys: its type name, its element's zero value, methods, nil or not."""

    def __init__(self, items: Any = (), type_name: str = "map[string]interface {}",
                 elem_zero: Callable[[], Any] | None = None, methods: dict[str, Method] | None = None,
                 nil: bool = False) -> None:
        super().__init__(items)
        self.type_name = type_name
        self.elem_zero = elem_zero  # None: the element type is `any`
        self.methods = methods or {}
        self.nil = nil and not self
        self.marshal: Callable[[Any], str] | None = None  # a MarshalJSON method


def methods_of(v: Any) -> dict[str, Method]:
    if isinstance(v, GoStruct):
        return v.stype.methods
    if isinstance(v, (GoSlice, GoMap)):
        return v.methods
    return {}


def kind(v: Any) -> str:
    """reflect.Kind, as a word."""
    if v is None:
        return "invalid"
    if v is NIL:
        return "interface"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Uint8):
        return "uint"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, complex):
        return "complex"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, bytes)):
        return "slice"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, GoStruct):
        return "ptr" if v.ptr else "struct"
    if isinstance(v, Method):
        return "func"
    raise TypeError(f"not a template value: {type(v).__name__}")


def type_name(v: Any) -> str:
    """reflect.Type.String() of the value."""
    if v is None:
        return "<nil>"
    if v is NIL:
        return "interface {}"
    simple = {"bool": "bool", "uint": "uint8", "int": "int", "float": "float64",
              "complex": "complex128", "string": "string", "func": "func"}
    k = kind(v)
    if k in simple:
        return simple[k]
    if isinstance(v, bytes):
        return "[]uint8"
    if isinstance(v, GoSlice):
        return v.type_name
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, GoMap):
        return v.type_name
    if isinstance(v, dict):
        return "map[string]interface {}"
    assert isinstance(v, GoStruct)
    return ("*" if v.ptr else "") + v.stype.name


def is_nil_value(v: Any) -> bool:
    """reflect's IsNil for nillable kinds (a nil slice, map, pointer or interface)."""
    if v is NIL:
        return True
    if isinstance(v, (GoSlice, GoMap)):
        return v.nil
    if isinstance(v, GoStruct):
        return v.ptr and v.values is None
    return False


def indirect(v: Any) -> tuple[Any, bool]:
    """Go's indirect: through pointers and interfaces to the value; (v, True) at a nil."""
    if v is NIL:
        return v, True
    if isinstance(v, GoStruct) and v.ptr:
        if v.values is None:
            return v, True
        return v.elem(), False
    return v, False


def indirect_interface(v: Any) -> Any:
    """The concrete value in an interface value: a nil interface becomes nothing (None)."""
    return None if v is NIL else v


def length(v: Any) -> int:
    """len(): Go strings count bytes."""
    if isinstance(v, str):
        return len(v.encode("utf-8", "surrogatepass"))
    return len(v)


def is_true(v: Any) -> tuple[bool, bool]:
    """Go's isTrue: (truth, ok). Empty strings, slices and maps, zeros, nil and false are false."""
    k = kind(v)
    if k == "invalid":
        return False, True
    if k in ("string", "slice", "map"):
        return length(v) > 0, True
    if k == "bool":
        return bool(v), True
    if k in ("int", "uint", "float", "complex"):
        return v != 0, True
    if k in ("ptr", "interface", "func"):
        return not is_nil_value(v), True
    if k == "struct":
        return True, True
    return False, False


def slot_value(v: Any, elem_any: bool) -> Any:
    """An element read out of a container: a None in an `any` slot is a nil interface."""
    return NIL if v is None and elem_any else v


def from_json(v: Any) -> Any:
    """JSON-decoded data as Go's encoding/json gives it in an `any`: every number a float64."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [from_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): from_json(x) for k, x in v.items()}
    raise TypeError(f"not JSON data: {type(v).__name__}")
