"""Go literals inside actions: numbers (parse/node.go newNumber) and quoted strings (strconv.Unquote)."""

from __future__ import annotations

import math
import re

from .gofmt import quote
from .lexer import T
from .nodes import NumberNode

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\"}


def _unquote_char(s: str, i: int, quote: str) -> tuple[str | int, int]:
    """One character of a Go string or rune literal at s[i]: (a str, or a byte for \\x/\\ooo), next i."""
    c = s[i]
    if c != "\\":
        if c == quote:
            raise ValueError("invalid syntax")
        return c, i + 1
    i += 1
    if i >= len(s):
        raise ValueError("invalid syntax")
    c = s[i]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    if c == quote and quote in "'\"":
        return c, i + 1
    if c in "xuU":
        size = {"x": 2, "u": 4, "U": 8}[c]
        digits = s[i + 1:i + 1 + size]
        if len(digits) != size or not re.fullmatch(r"[0-9a-fA-F]+", digits):
            raise ValueError("invalid syntax")
        value = int(digits, 16)
        if c == "x":
            return value, i + 1 + size
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise ValueError("invalid syntax")
        return chr(value), i + 1 + size
    if c in "01234567":
        digits = s[i:i + 3]
        if len(digits) != 3 or not re.fullmatch(r"[0-7]{3}", digits) or int(digits, 8) > 255:
            raise ValueError("invalid syntax")
        return int(digits, 8), i + 3
    raise ValueError("invalid syntax")


def _join(parts: list[str | int]) -> str:
    # \x and octal escapes are bytes: runs of them are decoded as UTF-8 (Go keeps raw bytes).
    out: list[str] = []
    pending = bytearray()
    for part in parts:
        if isinstance(part, int):
            pending.append(part)
            continue
        if pending:
            out.append(pending.decode("utf-8", "replace"))
            pending.clear()
        out.append(part)
    if pending:
        out.append(pending.decode("utf-8", "replace"))
    return "".join(out)


def unquote(quoted: str) -> str:
    """strconv.Unquote for "..." and `...` (a raw string drops its carriage returns, as Go does)."""
    if len(quoted) < 2 or quoted[0] != quoted[-1] or quoted[0] not in "\"`":
        raise ValueError("invalid syntax")
    body = quoted[1:-1]
    if quoted[0] == "`":
        if "`" in body:
            raise ValueError("invalid syntax")
        return body.replace("\r", "")
    if "\n" in body:
        raise ValueError("invalid syntax")
    parts: list[str | int] = []
    i = 0
    while i < len(body):
        part, i = _unquote_char(body, i, '"')
        parts.append(part)
    return _join(parts)


def _underscores_ok(body: str) -> bool:
    """Go's underscoreOK: an underscore only between digits, or after a base prefix."""
    lower = body.lower().lstrip("+-")
    if lower[:2] in ("0x", "0o", "0b"):
        lower = "0" + lower[2:]  # the prefix counts as a digit
    return re.search(r"(^|[^0-9a-f])_|_($|[^0-9a-f])", lower) is None


def _parse_int(text: str) -> int:
    """strconv.ParseInt(text, 0, 64) without the range check: Go syntax, base from the prefix."""
    if "_" in text and not _underscores_ok(text):
        raise ValueError("invalid syntax")
    body = text.replace("_", "")
    sign = 1
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    base = 10
    lower = body.lower()
    if lower.startswith(("0x", "0o", "0b")):
        base = {"x": 16, "o": 8, "b": 2}[lower[1]]
        body = body[2:]
    elif len(body) > 1 and body[0] == "0":
        base = 8
        body = body[1:]
    if not body:
        raise ValueError("invalid syntax")
    return sign * int(body, base)


def _parse_float(text: str) -> float:
    if "_" in text and not _underscores_ok(text):
        raise ValueError("invalid syntax")
    body = text.lower().replace("_", "")
    if body.lstrip("+-").startswith("0x"):
        return float.fromhex(body)
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", body):
        raise ValueError("invalid syntax")
    return float(body)


def parse_number(pos: int, text: str, typ: T) -> NumberNode:
    node = NumberNode(pos, text)
    if typ == T.CHAR_CONSTANT:
        try:
            char, end = _unquote_char(text, 1, "'")
        except (ValueError, IndexError):
            raise ValueError(f"malformed character constant: {text}") from None
        if text[end:] != "'":
            raise ValueError(f"malformed character constant: {text}")
        value = char if isinstance(char, int) else ord(char)
        node.is_int = node.is_uint = node.is_float = True
        node.int64 = node.uint64 = value
        node.float64 = float(value)
        return node
    if typ == T.COMPLEX:
        try:
            node.complex128 = complex(text.replace("i", "j"))
        except ValueError:
            raise ValueError(f"illegal number syntax: {quote(text)}") from None
        node.is_complex = True
        _simplify_complex(node)
        return node
    if text.endswith("i"):
        try:
            node.complex128 = complex(0, _parse_float(text[:-1]))
            node.is_complex = True
            _simplify_complex(node)
            return node
        except ValueError:
            pass
    try:
        value = _parse_int(text)
        if 0 <= value < 1 << 64:
            node.is_uint, node.uint64 = True, value
        if -(1 << 63) <= value < 1 << 63:
            node.is_int, node.int64 = True, value
    except ValueError:
        pass
    if node.is_int:
        node.is_float, node.float64 = True, float(node.int64)
    elif node.is_uint:
        node.is_float, node.float64 = True, float(node.uint64)
    else:
        try:
            f = _parse_float(text)
        except (ValueError, OverflowError):
            f = None
        if f is not None:
            if not any(c in text for c in ".eEpP"):
                raise ValueError(f"integer overflow: {quote(text)}")
            node.is_float, node.float64 = True, f
            if math.isfinite(f) and f == int(f):
                if -(1 << 63) <= int(f) < 1 << 63:
                    node.is_int, node.int64 = True, int(f)
                if 0 <= int(f) < 1 << 64:
                    node.is_uint, node.uint64 = True, int(f)
    if not (node.is_int or node.is_uint or node.is_float):
        raise ValueError(f"illegal number syntax: {quote(text)}")
    return node


def _simplify_complex(node: NumberNode) -> None:
    # A complex with no imaginary part is also a float (and maybe an int), as in Go.
    if node.complex128.imag == 0:
        node.is_float, node.float64 = True, node.complex128.real
        f = node.float64
        if f == int(f):
            node.is_int, node.int64 = True, int(f)
            if f >= 0:
                node.is_uint, node.uint64 = True, int(f)
