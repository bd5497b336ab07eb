"""Modelfiles and the per-model settings they leave in the store (template, system, parameters).

Supported: FROM and DRAFT (a store model or a local .gguf path), PARAMETER, TEMPLATE, SYSTEM, LICENSE,
MESSAGE, with Ollama's quoting ("..." or triple quotes). A TEMPLATE is Ollama's Go template (rendered
as Ollama renders it) or, as corral also accepts, a Jinja chat template.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ClientError
from corral.models.store import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    ModelName,
    ModelNotFound,
    Store,
)
from corral.models.template import TemplateError
from corral.models.template import check_template as check_go_or_jinja

_INT_PARAMS = {"num_ctx", "num_predict", "top_k", "seed", "repeat_last_n", "num_batch", "num_gpu", "num_thread",
               "num_keep", "draft_num_predict"}
_BOOL_PARAMS = {"exact", "speculative"}  # corral's: batch-invariant kernels (runner/kernels.py), drafting
# strconv.ParseBool's spellings, as Ollama parses a Modelfile's boolean PARAMETERs
_TRUE, _FALSE = {"1", "t", "T", "TRUE", "true", "True"}, {"0", "f", "F", "FALSE", "false", "False"}
_FLOAT_PARAMS = {"temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}


class ModelfileError(ClientError):
    """A Modelfile (or create request) that cannot be built."""


@dataclass
class Modelfile:
    source: str = ""  # FROM
    draft: str | None = None  # DRAFT: a draft model for speculative decoding
    template: str | None = None
    system: str | None = None
    license: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)


_MESSAGE_ROLES = ("system", "user", "assistant")


def parse_modelfile(text: str) -> Modelfile:
    mf = Modelfile()
    for command, arg in _commands(text):
        if command == "from":
            mf.source = arg
        elif command == "draft":
            mf.draft = arg
        elif command == "template":
            mf.template = arg
        elif command == "system":
            mf.system = arg
        elif command == "license":
            mf.license = arg
        elif command == "parameter":
            key, _, value = arg.partition(" ")
            add_parameter(mf.parameters, key.strip(), value.strip())
        elif command == "message":
            role, _, content = arg.partition(" ")
            if role.strip().lower() not in _MESSAGE_ROLES:
                raise ModelfileError(f"MESSAGE role must be one of {', '.join(_MESSAGE_ROLES)}, got {role.strip()!r}")
            mf.messages.append({"role": role.strip().lower(), "content": _unquote(content.strip())})
        elif command != "adapter":
            raise ModelfileError(f"unknown Modelfile command {command.upper()!r}")
    if not mf.source:
        raise ModelfileError("a Modelfile needs a FROM line")
    return mf


def _unquote(text: str) -> str:
    if text.startswith('"""') and text.endswith('"""') and len(text) >= 6:
        return text[3:-3]
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('\\"', '"')
    return text


def is_local_path(source: str) -> bool:
    """Whether FROM names a file rather than a model (Ollama's rule, plus relative paths)."""
    return source.endswith(".gguf") or source.startswith(("/", "./", "../", "~"))


def add_parameter(params: dict[str, Any], key: str, value: Any) -> None:
    try:
        if key == "stop":
            params.setdefault("stop", []).append(str(value).strip('"'))
        elif key in _INT_PARAMS:
            params[key] = int(value)
        elif key in _FLOAT_PARAMS:
            number = float(value)
            if not math.isfinite(number):  # inf/nan are not JSON: the params layer could not hold them
                raise ValueError(value)
            params[key] = number
        elif key in _BOOL_PARAMS:
            params[key] = _parse_bool(value)
        else:
            raise ModelfileError(f"unknown parameter {key!r}")
    except (TypeError, ValueError) as exc:
        raise ModelfileError(f"invalid value for parameter {key!r}: {value!r}") from exc


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip('"')
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(value)


def check_template(template: str) -> None:
    """A TEMPLATE must render: Ollama's Go templates (what Modelfiles carry), or a Jinja chat
    template (what a GGUF carries). A broken one is refused before anything is written."""
    try:
        check_go_or_jinja(template)
    except TemplateError as exc:
        raise ModelfileError(f"TEMPLATE: {exc}") from None


_COMMAND = re.compile(r'^[ \t]*([A-Za-z]+)[ \t]+(?:"""(.*?)"""|"((?:[^"\\\n]|\\.)*)"[ \t]*$|([^\n]*))',
                      re.MULTILINE | re.DOTALL)


def _commands(text: str) -> Iterator[tuple[str, str]]:
    """(command, argument) pairs; a triple-quoted argument may span lines."""
    for match in _COMMAND.finditer(text):
        command = match.group(1).lower()
        if match.group(2) is not None:
            yield command, match.group(2)
        elif match.group(3) is not None:
            yield command, match.group(3).replace('\\"', '"')
        else:
            yield command, match.group(4).strip()


@dataclass(frozen=True)
class ModelExtras:
    """What a created model adds on top of its GGUF: applied per request."""

    template: str | None = None
    system: str | None = None
    parameters: dict = field(default_factory=dict)
    license: str | None = None
    messages: list[dict] = field(default_factory=list)  # placed before a chat's own messages


def load_extras(store: Store, name: ModelName) -> ModelExtras:
    try:
        params = store.text_layer(name, MEDIA_PARAMS)
        messages = store.text_layer(name, MEDIA_MESSAGES)
        return ModelExtras(template=store.text_layer(name, MEDIA_TEMPLATE),
                           system=store.text_layer(name, MEDIA_SYSTEM),
                           parameters=json.loads(params) if params else {},
                           license=store.text_layer(name, MEDIA_LICENSE),
                           messages=_messages(json.loads(messages)) if messages else [])
    except ModelNotFound:
        return ModelExtras()


def _messages(value: Any) -> list[dict]:
    """A messages layer's conversation, with anything that is not a message left out."""
    if not isinstance(value, list):
        return []
    return [{"role": m["role"], "content": m.get("content") or "",
             **{k: m[k] for k in _MESSAGE_TEXTS if isinstance(m.get(k), str) and m[k]},
             **({"tool_calls": m["tool_calls"]} if _calls(m.get("tool_calls")) else {})}
            for m in value if isinstance(m, dict) and m.get("role") in _MESSAGE_ROLES + ("tool",)]


_MESSAGE_TEXTS = ("thinking", "tool_name", "tool_call_id")


def _calls(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(c, dict) and isinstance(c.get("function"), dict) for c in value)


def text_layers(mf: Modelfile) -> dict[str, str]:
    """Media type → content for the layers a Modelfile adds besides the weights."""
    layers = {}
    if mf.template is not None:
        check_template(mf.template)
        layers[MEDIA_TEMPLATE] = mf.template
    if mf.system is not None:
        layers[MEDIA_SYSTEM] = mf.system
    if mf.license is not None:
        layers[MEDIA_LICENSE] = mf.license
    if mf.parameters:
        layers[MEDIA_PARAMS] = json.dumps(mf.parameters)
    if mf.messages:
        layers[MEDIA_MESSAGES] = json.dumps(mf.messages)
    return layers
