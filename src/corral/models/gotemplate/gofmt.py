"""Go's fmt for the values templates print: Sprint, Sprintln, Sprintf and %v of every kind.

Floats print as Go prints them (%v is the shortest %g with an exponent from 1e+06 on),
maps in key order, structs as {a b c}, values with a String method through it (also inside
slices, maps and structs, as fmt does at every depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .values import NIL, GoStruct, Uint8, kind, methods_of, type_name

TOO_LARGE = 1_000_000  # Go's fmt: a larger width or precision is %!(BADWIDTH) / %!(BADPREC)


@dataclass
class Flags:
    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    prec: int | None = None
    plus_v: bool = False
    sharp_v: bool = False


def stringer(v: Any) -> str | None:
    """The value's String() result, if it has that method."""
    method = methods_of(v).get("String")
    return None if method is None else method.fn(v)


# ---- numbers

def shortest(f: float) -> tuple[str, int]:
    """The shortest decimal digits that read back as f (Python's repr, like Go's, finds them)
    and the position of the decimal point: f = 0.DIGITS x 10**dp."""
    _, digits, exp = Decimal(repr(abs(f))).as_tuple()
    text = "".join(str(d) for d in digits)
    assert isinstance(exp, int)
    return text.rstrip("0") or "0", len(text) + exp


def fmt_e(neg: bool, digits: str, dp: int, prec: int, e: str) -> str:
    out = "-" if neg else ""
    out += digits[0]
    if prec > 0:
        out += "." + (digits[1:1 + prec]).ljust(prec, "0")
    exp = dp - 1 if digits != "0" else 0
    sign = "+" if exp >= 0 else "-"
    return out + e + sign + str(abs(exp)).rjust(2, "0")


def fmt_f(neg: bool, digits: str, dp: int, prec: int) -> str:
    out = "-" if neg else ""
    if dp > 0:
        out += digits[:dp].ljust(dp, "0")
    else:
        out += "0"
    if prec > 0:
        out += "." + "".join(digits[dp + i] if 0 <= dp + i < len(digits) else "0" for i in range(prec))
    return out


def format_float(f: float, verb: str, prec: int | None) -> str:
    """strconv.FormatFloat for verbs e E f F g G v with Go's precision rules (None: shortest/default)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = math.copysign(1.0, f) < 0
    if verb in "vgG" and prec is None:  # shortest; %e form from exponent -5 and from 6 on
        if f == 0:
            return "-0" if neg else "0"
        digits, dp = shortest(f)
        if not -4 <= dp - 1 < 6:
            return fmt_e(neg, digits, dp, len(digits) - 1, "E" if verb == "G" else "e")
        return fmt_f(neg, digits, dp, max(len(digits) - dp, 0))
    if verb in "eE":
        return f"{f:.{6 if prec is None else prec}{verb}}"
    if verb in "fF":
        return f"{f:.{6 if prec is None else prec}f}"
    if verb in "gG":
        return f"{f:.{prec}{verb}}"
    raise ValueError(verb)


def _pad(s: str, fl: Flags, zero_ok: bool = True) -> str:
    if fl.width is None or len(s) >= fl.width:
        return s
    fill = fl.width - len(s)
    if fl.minus:
        return s + " " * fill
    if fl.zero and zero_ok:
        return "0" * fill + s
    return " " * fill + s


def _pad_number(s: str, fl: Flags) -> str:
    """Pad a signed number: zeros go after the sign."""
    if fl.width is not None and fl.zero and not fl.minus and len(s) < fl.width:
        sign = s[0] if s[:1] in "+- " else ""
        return sign + "0" * (fl.width - len(s)) + s[len(sign):]
    return _pad(s, fl, zero_ok=False)


def _fmt_integer(v: int, verb: str, fl: Flags) -> str:
    """fmt's fmtInteger: %.3d and %03d both mean leading zeros; a prefix goes before them."""
    if verb == "c":
        return _pad(chr(v) if 0 <= v <= 0x10FFFF else "\ufffd", fl)
    if verb == "q":
        return _pad(quote_rune(v), fl)
    if verb == "U":
        text = f"U+{v:04X}"
        if fl.sharp and 0 <= v <= 0x10FFFF and chr(v).isprintable():
            text += f" '{chr(v)}'"
        return _pad(text, fl)
    base = {"v": 10, "d": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}[verb]
    if fl.prec == 0 and v == 0:
        return _pad("", Flags(minus=fl.minus, width=fl.width))
    digits = format(abs(v), {2: "b", 8: "o", 10: "d", 16: "x"}[base])
    if verb == "X":
        digits = digits.upper()
    if fl.prec is not None:
        digits = digits.rjust(fl.prec, "0")
    elif fl.zero and not fl.minus and fl.width is not None:
        digits = digits.rjust(fl.width - (1 if v < 0 or fl.plus or fl.space else 0), "0")
    prefix = ""
    if fl.sharp:
        if base == 2:
            prefix = "0b"
        elif base == 8 and not digits.startswith("0"):
            prefix = "0"
        elif base == 16:
            prefix = "0X" if verb == "X" else "0x"
    if verb == "O":
        prefix = "0o"
    sign = "-" if v < 0 else ("+" if fl.plus else (" " if fl.space else ""))
    return _pad(sign + prefix + digits, fl, zero_ok=False)


def _fmt_float(v: float, verb: str, fl: Flags) -> str:
    text = format_float(v, "g" if verb == "v" else verb, fl.prec)
    if text in ("+Inf", "-Inf", "NaN"):  # never zero-padded; +Inf keeps its sign
        if text == "NaN" and (fl.plus or fl.space):
            text = ("+" if fl.plus else " ") + text
        elif text == "+Inf" and fl.space and not fl.plus:
            text = " Inf"
        return _pad(text, fl, zero_ok=False)
    if text[0] != "-":
        if fl.plus:
            text = "+" + text
        elif fl.space:
            text = " " + text
    return _pad_number(text, fl)


# ---- strings

def quote(s: str) -> str:
    """strconv.Quote: Go-syntax double-quoted, printable runes kept."""
    out = ['"']
    for c in s:
        out.append(_escape_rune(c, '"'))
    out.append('"')
    return "".join(out)


def quote_rune(r: int) -> str:
    if not 0 <= r <= 0x10FFFF or 0xD800 <= r <= 0xDFFF:
        r = 0xFFFD
    return "'" + _escape_rune(chr(r), "'") + "'"


def _escape_rune(c: str, q: str) -> str:
    if c == q or c == "\\":
        return "\\" + c
    if c.isprintable():
        return c
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    if c in named:
        return named[c]
    o = ord(c)
    if o < 0x20 or o == 0x7F:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _fmt_string(s: str, verb: str, fl: Flags) -> str:
    if verb in "vs":
        if fl.prec is not None:
            s = s[:fl.prec]
        return _pad(s, fl)
    if verb == "q":
        if fl.prec is not None:
            s = s[:fl.prec]
        if fl.sharp and "`" not in s and all(c.isprintable() or c == "\t" for c in s):
            return _pad("`" + s + "`", fl)
        return _pad(quote(s), fl)
    if verb in "xX":
        data = s.encode("utf-8", "surrogatepass")
        if fl.prec is not None:
            data = data[:fl.prec]
        hexed = [format(b, "02X" if verb == "X" else "02x") for b in data]
        sep = " " if fl.space else ""
        if fl.sharp:
            hexed = [("0X" if verb == "X" else "0x") + h for h in hexed] if fl.space else hexed
            text = sep.join(hexed)
            if not fl.space and data:
                text = ("0X" if verb == "X" else "0x") + text
        else:
            text = sep.join(hexed)
        return _pad(text, fl)
    raise ValueError(verb)


# ---- any value

def _bad_verb(v: Any, verb: str) -> str:
    if v is None or v is NIL:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(v)}={format_value(v, 'v', Flags(), 0)})"


def format_value(v: Any, verb: str, fl: Flags, depth: int) -> str:
    """fmt's printArg/printValue for one value."""
    if v is None or v is NIL:
        if depth > 0 or verb in "vT":
            return _pad("<nil>", fl)
        return _bad_verb(v, verb)
    if verb == "T":
        return _pad(type_name(v), fl)
    if verb in "vsxXq" and not fl.sharp_v:
        text = stringer(v)
        if text is not None:
            return _fmt_string(text, verb, fl)
    k = kind(v)
    try:
        if k == "bool":
            if verb in "vt":
                return _pad("true" if v else "false", fl)
            return _bad_verb(v, verb)
        if k in ("int", "uint"):
            if verb in "vdboOxXcqU":
                return _fmt_integer(int(v), verb, fl)
            return _bad_verb(v, verb)
        if k == "float":
            if verb in "veEfFgG":
                return _fmt_float(v, verb, fl)
            return _bad_verb(v, verb)
        if k == "complex":
            if verb in "veEfFgG":
                real = _fmt_float(v.real, verb, Flags(prec=fl.prec))
                imag = _fmt_float(v.imag, verb, Flags(prec=fl.prec, plus=True))
                return _pad("(" + real + imag + "i)", fl)
            return _bad_verb(v, verb)
        if k == "string":
            if verb in "vsqxX":
                return _fmt_string(v, verb, fl)
            return _bad_verb(v, verb)
        if isinstance(v, bytes):
            if verb in "sqxX":
                return _fmt_string(v.decode("utf-8", "replace"), verb, fl)
            return _list(list(Uint8(b) for b in v), verb, fl, depth)
        if k == "slice":
            return _list(v, verb, fl, depth)
        if k == "map":
            return _map(v, verb, fl, depth)
        if k == "struct":
            return _struct(v, verb, fl, depth)
        if k == "ptr":
            if v.values is None:
                return _pad("<nil>", fl)
            if depth == 0:
                return "&" + _struct(v.elem(), verb, fl, depth + 1)
            return _pad("0xc000010000", fl)  # an address: no Go program prints the same one twice
    except ValueError:
        return _bad_verb(v, verb)
    return _bad_verb(v, verb)


def _list(items: list, verb: str, fl: Flags, depth: int) -> str:
    return "[" + " ".join(format_value(x, verb, fl, depth + 1) for x in items) + "]"


def _map(m: dict, verb: str, fl: Flags, depth: int) -> str:
    parts = [format_value(k, verb, fl, depth + 1) + ":" + format_value(m[k], verb, fl, depth + 1)
             for k in sorted(m)]
    return "map[" + " ".join(parts) + "]"


def _struct(s: GoStruct, verb: str, fl: Flags, depth: int) -> str:
    parts = []
    for f in s.stype.fields:
        value = s.values.get(f.name) if s.values is not None else None
        text = format_value(value, verb, fl, depth + 1)
        parts.append(f"{f.name}:{text}" if fl.plus_v else text)
    return "{" + " ".join(parts) + "}"


# ---- the fmt entry points

def sprint(args: list[Any]) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = []
    prev_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(format_value(arg, "v", Flags(), 0))
        prev_string = is_string
    return "".join(out)


def sprintln(args: list[Any]) -> str:
    return " ".join(format_value(a, "v", Flags(), 0) for a in args) + "\n"


def sprintf(fmt: str, args: list[Any]) -> str:
    """fmt.Sprintf, with Go's %!verb(type=value), %!v(MISSING) and %!(EXTRA ...) reports."""
    out: list[str] = []
    i, n, argnum = 0, len(fmt), 0
    reordered = False
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        fl = Flags()
        while i < n and fmt[i] in "#0+- ":
            c = fmt[i]
            if c == "#":
                fl.sharp = True
            elif c == "0":
                fl.zero = not fl.minus
            elif c == "+":
                fl.plus = True
            elif c == "-":
                fl.minus, fl.zero = True, False
            else:
                fl.space = True
            i += 1
        if i < n and fmt[i] == "[":  # explicit argument index: %[2]d
            close = fmt.find("]", i)
            if close > i and fmt[i + 1:close].isdigit():
                argnum = int(fmt[i + 1:close]) - 1
                reordered = True
                i = close + 1
        if i < n and fmt[i] == "*":
            i += 1
            width = args[argnum] if argnum < len(args) else None
            if isinstance(width, int) and not isinstance(width, bool) and abs(width) <= TOO_LARGE:
                fl.width = width
                if fl.width < 0:
                    fl.minus, fl.zero, fl.width = True, False, -fl.width
            else:
                out.append("%!(BADWIDTH)")
            argnum += 1
        else:
            start = i
            while i < n and fmt[i].isdigit():
                i += 1
            if i > start:
                fl.width = int(fmt[start:i])
                if fl.width > TOO_LARGE:
                    fl.width = None
                    out.append("%!(BADWIDTH)")
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                prec = args[argnum] if argnum < len(args) else None
                if isinstance(prec, int) and not isinstance(prec, bool) and abs(prec) <= TOO_LARGE:
                    fl.prec = prec if prec >= 0 else None
                else:
                    out.append("%!(BADPREC)")
                argnum += 1
            else:
                start = i
                while i < n and fmt[i].isdigit():
                    i += 1
                fl.prec = int(fmt[start:i]) if i > start else 0
                if fl.prec > TOO_LARGE:
                    fl.prec = None
                    out.append("%!(BADPREC)")
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argnum >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argnum]
        argnum += 1
        if verb == "v":
            if fl.sharp:
                fl.sharp, fl.sharp_v = False, True
            if fl.plus:
                fl.plus, fl.plus_v = False, True
        out.append(format_value(arg, verb, fl, 0))
    if not reordered and argnum < len(args):
        extra = ", ".join("<nil>" if a is None else f"{type_name(a)}={format_value(a, 'v', Flags(), 0)}"
                          for a in args[argnum:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)

