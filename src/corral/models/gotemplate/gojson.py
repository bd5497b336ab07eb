"""Go's encoding/json Marshal for template values, byte for byte.

What differs from Python's json.dumps and matters here: no spaces; map keys sorted (struct fields
keep their order); <, > and & escaped as \\u003c, \\u003e, \\u0026 and U+2028/U+2029 escaped;
floats as Go writes them (1e+21, 1e-7, never 1.0); []byte as base64; nil slices and maps as null.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from .gofmt import fmt_e, fmt_f, format_float, shortest
from .values import NIL, GoMap, GoSlice, GoStruct, Uint8

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
            "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class UnsupportedValue(ValueError):
    """json.Marshal fails (a NaN or an infinity): Ollama's `json` helper then yields ""."""


def encode_string(s: str) -> str:
    out = ['"']
    for c in s:
        esc = _ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif c < " ":
            out.append(f"\\u{ord(c):04x}")
        elif "\ud800" <= c <= "\udfff":
            out.append("\\ufffd")  # not valid UTF-8: Go writes the replacement character
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def encode_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise UnsupportedValue(f"json: unsupported value: {format_float(f, 'g', None)}")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        return _exp_form(f)
    return _plain_form(f)


def _plain_form(f: float) -> str:
    """strconv 'f' with the shortest digits."""
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    digits, dp = shortest(f)
    return fmt_f(f < 0, digits, dp, max(len(digits) - dp, 0))


def _exp_form(f: float) -> str:
    digits, dp = shortest(f)
    text = fmt_e(f < 0, digits, dp, len(digits) - 1, "e")
    # Go cleans e-09 up to e-9 (only negative exponents)
    if len(text) >= 4 and text[-4] == "e" and text[-3] == "-" and text[-2] == "0":
        text = text[:-2] + text[-1]
    return text


def _is_empty(v: Any) -> bool:
    """omitempty: false, 0, "", nil, and empty slices and maps."""
    if v is None or v is NIL:
        return True
    if isinstance(v, GoStruct):
        return v.ptr and v.values is None
    if isinstance(v, (str, list, dict, bytes)):
        return len(v) == 0
    if isinstance(v, (bool, int, float)):
        return not v
    return False


def marshal(v: Any) -> str:
    """json.Marshal(v) as text; raises UnsupportedValue where Go returns an error."""
    if v is None or v is NIL:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (Uint8, int)):
        return str(int(v))
    if isinstance(v, float):
        return encode_float(v)
    if isinstance(v, str):
        return encode_string(v)
    if isinstance(v, bytes):
        return encode_string(base64.b64encode(v).decode("ascii"))
    if isinstance(v, GoStruct):
        if v.ptr and v.values is None:
            return "null"
        if v.stype.marshal_json is not None:
            return v.stype.marshal_json(v)
        parts = []
        for f in v.stype.fields:
            if f.json == "-":
                continue
            value = v.values.get(f.name) if v.values is not None else None
            if f.omitempty and _is_empty(value):
                continue
            parts.append(encode_string(f.json or f.name) + ":" + marshal(value))
        return "{" + ",".join(parts) + "}"
    if isinstance(v, (GoSlice, GoMap)) and v.marshal is not None:
        return v.marshal(v)
    if isinstance(v, GoSlice) and v.nil:
        return "null"
    if isinstance(v, GoMap) and v.nil:
        return "null"
    if isinstance(v, list):
        return "[" + ",".join(marshal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(encode_string(k) + ":" + marshal(v[k]) for k in sorted(v)) + "}"
    raise UnsupportedValue(f"json: unsupported type: {type(v).__name__}")


def marshal_ordered(pairs: list[tuple[str, Any]]) -> str:
    """An insertion-ordered object (Ollama's orderedmap MarshalJSON)."""
    return "{" + ",".join(encode_string(k) + ":" + marshal(x) for k, x in pairs) + "}"
