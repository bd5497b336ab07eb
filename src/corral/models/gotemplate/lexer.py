"""The lexer of Go's text/template (text/template/parse/lex.go), state for state.

Trim markers are handled here, as in Go: "{{- " trims the white space (space, tab, CR, LF)
before the action, " -}}" the white space after it, and the marker needs that space so that
"{{-3}}" is the number -3. Comments must sit directly inside their delimiters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, auto
from typing import Protocol

from .gofmt import quote


class StateFn(Protocol):
    """A state of the lexer: it lexes some input and returns the next state, or None at the end."""

    def __call__(self) -> StateFn | None: ...


class T(IntEnum):
    ERROR = auto()
    BOOL = auto()
    CHAR = auto()  # a printable ASCII character: the grab bag for "," and friends
    CHAR_CONSTANT = auto()
    COMMENT = auto()
    COMPLEX = auto()
    ASSIGN = auto()  # "="
    DECLARE = auto()  # ":="
    EOF = auto()
    FIELD = auto()  # ".Name"
    IDENTIFIER = auto()  # a function name
    LEFT_DELIM = auto()
    LEFT_PAREN = auto()
    NUMBER = auto()
    PIPE = auto()
    RAW_STRING = auto()
    RIGHT_DELIM = auto()
    RIGHT_PAREN = auto()
    SPACE = auto()
    STRING = auto()
    TEXT = auto()
    VARIABLE = auto()  # "$" or "$name"
    # keywords
    BLOCK = auto()
    BREAK = auto()
    CONTINUE = auto()
    DOT = auto()
    DEFINE = auto()
    ELSE = auto()
    END = auto()
    IF = auto()
    NIL = auto()
    RANGE = auto()
    TEMPLATE = auto()
    WITH = auto()


KEYWORDS = {".": T.DOT, "block": T.BLOCK, "break": T.BREAK, "continue": T.CONTINUE,
            "define": T.DEFINE, "else": T.ELSE, "end": T.END, "if": T.IF, "range": T.RANGE,
            "nil": T.NIL, "template": T.TEMPLATE, "with": T.WITH}
LEFT, RIGHT = "{{", "}}"
SPACE_CHARS = " \t\r\n"


@dataclass(frozen=True)
class Item:
    typ: T
    pos: int
    val: str
    line: int

    def __str__(self) -> str:
        if self.typ == T.EOF:
            return "EOF"
        if self.typ == T.ERROR:
            return self.val
        if self.typ >= T.BLOCK:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return f'"{self.val[:10]}"...'
        return f'"{self.val}"'


def is_space(c: str) -> bool:
    return c != "" and c in SPACE_CHARS


def is_alnum(c: str) -> bool:
    # Go: '_' or unicode.IsLetter or unicode.IsDigit (category Nd, which isdecimal() is).
    return c != "" and (c == "_" or c.isalpha() or c.isdecimal())


def _has_left_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and s[i] == "-" and is_space(s[i + 1])


def _has_right_trim(s: str, i: int) -> bool:
    return len(s) >= i + 2 and is_space(s[i]) and s[i + 1] == "-"


class Lexer:
    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.line = 1
        self.start_line = 1
        self.paren_depth = 0
        self.items: list[Item] = []

    # ---- primitives (as Go's; "" stands for eof)
    def next(self) -> str:
        if self.pos >= len(self.input):
            self.pos = len(self.input) + 1  # past the end: backup() then undoes it
            return ""
        c = self.input[self.pos]
        self.pos += 1
        if c == "\n":
            self.line += 1
        return c

    def backup(self) -> None:
        if self.pos > len(self.input):
            self.pos = len(self.input)
            return
        if self.pos > 0:
            self.pos -= 1
            if self.input[self.pos] == "\n":
                self.line -= 1

    def peek(self) -> str:
        c = self.next()
        self.backup()
        return c

    def emit(self, typ: T) -> None:
        self.items.append(Item(typ, self.start, self.input[self.start:self.pos], self.start_line))
        self.start = self.pos
        self.start_line = self.line

    def ignore(self) -> None:
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def accept(self, valid: str) -> bool:
        c = self.next()
        if c != "" and c in valid:
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while True:
            c = self.next()
            if c == "" or c not in valid:
                break
        self.backup()

    def error(self, message: str) -> None:
        self.items.append(Item(T.ERROR, self.start, message, self.start_line))

    def at_right_delim(self) -> tuple[bool, bool]:
        if _has_right_trim(self.input, self.pos) and self.input.startswith(RIGHT, self.pos + 2):
            return True, True
        if self.input.startswith(RIGHT, self.pos):
            return True, False
        return False, False

    def at_terminator(self) -> bool:
        c = self.peek()
        if is_space(c) or c in ("", ".", ",", "|", ":", ")", "("):
            return True
        return self.input.startswith(RIGHT, self.pos)

    # ---- states: each returns the next state, or None when lexing ends
    def run(self) -> list[Item]:
        state: StateFn | None = self.lex_text
        while state is not None:
            state = state()
        return self.items

    def lex_text(self) -> StateFn | None:
        x = self.input.find(LEFT, self.pos)
        if x >= 0:
            if x > self.pos:
                self.pos = x
                trim = 0
                if _has_left_trim(self.input, self.pos + len(LEFT)):
                    chunk = self.input[self.start:self.pos]
                    trim = len(chunk) - len(chunk.rstrip(SPACE_CHARS))
                self.pos -= trim
                self.line += self.input.count("\n", self.start, self.pos)
                text = Item(T.TEXT, self.start, self.input[self.start:self.pos], self.start_line)
                self.start = self.pos
                self.start_line = self.line
                self.pos += trim
                self.ignore()
                if text.val:
                    self.items.append(text)
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.line += self.input.count("\n", self.start, self.pos)
            self.emit(T.TEXT)
        self.emit(T.EOF)
        return None

    def lex_left_delim(self) -> StateFn | None:
        self.pos += len(LEFT)
        after = 2 if _has_left_trim(self.input, self.pos) else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        self.emit(T.LEFT_DELIM)
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        return self.lex_inside_action

    def lex_comment(self) -> StateFn | None:
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            self.error("unclosed comment")
            return None
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            self.error("comment ends before closing delimiter")
            return None
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line
        if trim:
            self.pos += 2
        self.pos += len(RIGHT)
        if trim:
            rest = self.input[self.pos:]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
        self.ignore()
        return self.lex_text

    def lex_right_delim(self) -> StateFn | None:
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(RIGHT)
        self.emit(T.RIGHT_DELIM)
        if trim:
            rest = self.input[self.pos:]
            self.pos += len(rest) - len(rest.lstrip(SPACE_CHARS))
            self.ignore()
        return self.lex_text

    def lex_inside_action(self) -> StateFn | None:
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            self.error("unclosed left paren")
            return None
        c = self.next()
        if c == "":
            self.error("unclosed action")
            return None
        if is_space(c):
            self.backup()  # put the space back in case it starts " -}}"
            return self.lex_space
        if c == "=":
            self.emit(T.ASSIGN)
        elif c == ":":
            if self.next() != "=":
                self.error("expected :=")
                return None
            self.emit(T.DECLARE)
        elif c == "|":
            self.emit(T.PIPE)
        elif c == '"':
            return self.lex_quote
        elif c == "`":
            return self.lex_raw_quote
        elif c == "$":
            return self.lex_variable
        elif c == "'":
            return self.lex_char
        elif c == "." and self.pos < len(self.input) and not ("0" <= self.input[self.pos] <= "9"):
            return self.lex_field
        elif c in "+-." or "0" <= c <= "9":
            self.backup()
            return self.lex_number
        elif is_alnum(c):
            self.backup()
            return self.lex_identifier
        elif c == "(":
            self.paren_depth += 1
            self.emit(T.LEFT_PAREN)
        elif c == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.error("unexpected right paren")
                return None
            self.emit(T.RIGHT_PAREN)
        elif c <= "\x7f" and c.isprintable():
            self.emit(T.CHAR)
        else:
            self.error(f"unrecognized character in action: U+{ord(c):04X}")
            return None
        return self.lex_inside_action

    def lex_space(self) -> StateFn | None:
        spaces = 0
        while is_space(self.peek()):
            self.next()
            spaces += 1
        # A trim-marked right delimiter starts with a space: leave that space to it.
        if _has_right_trim(self.input, self.pos - 1) and self.input.startswith(RIGHT, self.pos + 1):
            self.backup()
            if spaces == 1:
                return self.lex_right_delim
        self.emit(T.SPACE)
        return self.lex_inside_action

    def lex_identifier(self) -> StateFn | None:
        while True:
            c = self.next()
            if not is_alnum(c):
                self.backup()
                word = self.input[self.start:self.pos]
                if not self.at_terminator():
                    self.error(f"bad character U+{ord(c):04X}" if c else "bad character")
                    return None
                if word in KEYWORDS and KEYWORDS[word] >= T.BLOCK:
                    self.emit(KEYWORDS[word])
                elif word in ("true", "false"):
                    self.emit(T.BOOL)
                else:
                    self.emit(T.IDENTIFIER)
                return self.lex_inside_action

    def lex_field(self) -> StateFn | None:
        return self._field_or_variable(T.FIELD)

    def lex_variable(self) -> StateFn | None:
        if self.at_terminator():  # a bare "$"
            self.emit(T.VARIABLE)
            return self.lex_inside_action
        return self._field_or_variable(T.VARIABLE)

    def _field_or_variable(self, typ: T) -> StateFn | None:
        if self.at_terminator():  # "." or "$" alone
            self.emit(T.VARIABLE if typ == T.VARIABLE else T.DOT)
            return self.lex_inside_action
        while True:
            c = self.next()
            if not is_alnum(c):
                self.backup()
                break
        if not self.at_terminator():
            self.error(f"bad character U+{ord(c):04X}" if c else "bad character")
            return None
        self.emit(typ)
        return self.lex_inside_action

    def lex_char(self) -> StateFn | None:
        while True:
            c = self.next()
            if c == "\\":
                c = self.next()
                if c not in ("", "\n"):
                    continue
            if c in ("", "\n"):
                self.error("unterminated character constant")
                return None
            if c == "'":
                break
        self.emit(T.CHAR_CONSTANT)
        return self.lex_inside_action

    def lex_number(self) -> StateFn | None:
        if not self._scan_number():
            self.error(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
            return None
        if self.peek() in ("+", "-"):  # complex: 1+2i, no spaces, must end in 'i'
            if not self._scan_number() or self.input[self.pos - 1] != "i":
                self.error(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
                return None
            self.emit(T.COMPLEX)
            return self.lex_inside_action
        self.emit(T.NUMBER)
        return self.lex_inside_action

    def _scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if is_alnum(self.peek()):
            self.next()
            return False
        return True

    def lex_quote(self) -> StateFn | None:
        while True:
            c = self.next()
            if c == "\\":
                c = self.next()
                if c not in ("", "\n"):
                    continue
            if c in ("", "\n"):
                self.error("unterminated quoted string")
                return None
            if c == '"':
                break
        self.emit(T.STRING)
        return self.lex_inside_action

    def lex_raw_quote(self) -> StateFn | None:
        while True:
            c = self.next()
            if c == "":
                self.error("unterminated raw quoted string")
                return None
            if c == "`":
                break
        self.emit(T.RAW_STRING)
        return self.lex_inside_action


def lex(text: str) -> list[Item]:
    """Every item of the text; the last one is EOF or ERROR."""
    return Lexer(text).run()
