"""Structured output: Ollama's `format` ("json" or a JSON schema) as a llama.cpp GBNF grammar."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from corral.errors import ClientError


def grammar_for(format: Any) -> str | None:
    """GBNF for a `format` value; None for no constraint; ValueError for a bad one."""
    if format is None or format == "":
        return None
    if format == "json":
        return JSON_GBNF
    if isinstance(format, dict):
        try:
            return json_schema_to_gbnf(json.dumps(format))
        except Exception as exc:
            raise ClientError(f"invalid format schema: {exc}") from None
    raise ClientError(f'invalid format {format!r}: use "json" or a JSON schema object')
