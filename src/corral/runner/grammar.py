"""Structured output: Ollama's `format` ("json" or a JSON schema) as a llama.cpp GBNF grammar."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from corral.errors import ClientError

_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def grammar_for(format: Any) -> str | None:
    """GBNF for a `format` value; None for no constraint; ValueError for a bad one."""
    if format is None or format == "":
        return None
    if format == "json":
        return JSON_GBNF
    if isinstance(format, dict):
        try:
            grammar = json_schema_to_gbnf(json.dumps(format))
        except Exception as exc:
            raise ClientError(f"invalid format schema: {exc}") from None
        # llama-cpp-python's converter lets a string hold raw control characters (a line break),
        # which JSON forbids; llama.cpp's own converter and JSON_GBNF exclude them.
        return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
    raise ClientError(f'invalid format {format!r}: use "json" or a JSON schema object')
