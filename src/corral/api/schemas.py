"""The wire contract: pydantic models for Ollama's request bodies.

Types are strict, as Go's JSON decoding is in Ollama: "0.5" is not a float, 1.5 is not an int.
Unknown fields are ignored, as Ollama does. Every body is first checked by `body_problem`: numbers
must be finite and strings valid Unicode, in typed fields and free-form ones (options, format,
tools) alike.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from corral.errors import ClientError
from corral.runner.protocol import MAX_TOP_LOGPROBS, GenerationOptions

Number = StrictInt | StrictFloat


# A \uD800-\uDFFF escape: the only way a lone surrogate gets into a body that is valid UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def body_problem(raw: bytes) -> str | None:
    """Why a JSON request body must be refused although Python's json reads it, or None.

    Python's json takes NaN, Infinity and 1e309 (as infinity), none of which is JSON, and
    "\\ud800" (a lone surrogate, which cannot be encoded, so it would fail later, deep in
    tokenization or the runner's pipe). A body that is not JSON at all is left to the route's
    parser, which says where it broke."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid JSON body: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    non_finite: list[str] = []

    def constant(name: str) -> float:
        non_finite.append(name)
        return math.nan

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            non_finite.append(literal)
        return value

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except (ValueError, RecursionError):
        return None
    if not non_finite and not _SURROGATE_ESCAPE.search(text):
        return None  # the common case: nothing to look for, no walk
    where, what = _find_bad(value)
    if what == "surrogate":
        return (f"invalid JSON body: lone surrogate in {where} "
                "(a \\uD800-\\uDFFF escape without its pair is not Unicode)")
    if what == "number":
        return (f"invalid JSON body: {where}: non-finite number {non_finite[0]} "
                "(numbers must be finite; NaN and Infinity are not JSON)")
    return None


def _find_bad(value: Any) -> tuple[str, str | None]:
    """The path ("options.temperature", "messages.0.content") of the first non-finite number
    or lone-surrogate string, and which it is, in document order."""
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        where = ".".join(map(str, path)) or "the body"
        if isinstance(item, float) and not math.isfinite(item):
            return where, "number"
        if isinstance(item, str) and _SURROGATE.search(item):
            return where, "surrogate"
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                if _SURROGATE.search(key):
                    return ".".join(map(str, path + (key.encode("utf-8", "backslashreplace").decode(),))), "surrogate"
                stack.append((path + (key,), child))
        elif isinstance(item, list):
            stack.extend((path + (i,), child) for i, child in reversed(list(enumerate(item))))
    return "the body", None


class _Body(BaseModel):
    # Non-finite floats are refused here too, for models built in code (a created model's
    # PARAMETERs merged under a request's options) rather than parsed from a body.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        # Ollama's Go client sends every field without `omitempty` (`"options": null`,
        # `"messages": null`); Ollama reads null as the field's zero value, that is, not given.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Options(_Body):
    """Ollama's `options`: sampling (per request) and load-time (per runner) settings."""

    num_predict: StrictInt | None = Field(None, ge=-2)
    temperature: Number | None = Field(None, ge=0)
    top_k: StrictInt | None = Field(None, ge=0)
    top_p: Number | None = Field(None, ge=0, le=1)
    min_p: Number | None = Field(None, ge=0, le=1)
    seed: StrictInt | None = None
    repeat_penalty: Number | None = Field(None, gt=0)
    repeat_last_n: StrictInt | None = Field(None, ge=-1)
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    stop: list[StrictStr] | StrictStr | None = None
    num_ctx: StrictInt | None = Field(None, ge=1)
    # Load-time options: a runner is built with them; a different value means another runner.
    num_gpu: StrictInt | None = Field(None, ge=-1)  # 0 = CPU; otherwise wholly on a GPU when one fits
    num_thread: StrictInt | None = Field(None, ge=1, le=1024)
    exact: StrictBool | None = None  # corral's: batch-invariant kernels (None: CORRAL_EXACT)
    num_keep: StrictInt | None = None  # tokens a context shift keeps at the start
    # Prompt-lookup speculative decoding for greedy requests (same output); None: the server's
    # default (CORRAL_SPECULATIVE).
    speculative: StrictBool | None = None
    # With a draft model (a DRAFT layer): tokens drafted per step, Ollama's default 4; 0: off.
    draft_num_predict: StrictInt | None = Field(None, ge=0)
    # Accepted for compatibility; corral sets it itself.
    num_batch: StrictInt | None = None

    def generation(self, extra_stop: tuple[str, ...] = (), format: Any = None, shift: bool = True,
                   logprobs: int | None = None) -> GenerationOptions:
        """The runner's options; `logprobs` is None, or how many alternatives each token lists."""
        values = {k: v for k, v in self.model_dump(exclude_none=True).items() if k in GenerationOptions.names()}
        values["shift"] = shift
        stop = values.pop("stop", [])
        values["stop"] = ([stop] if isinstance(stop, str) else list(stop)) + list(extra_stop)
        if logprobs is not None:
            values.update(logprobs=True, top_logprobs=logprobs)
        return GenerationOptions(**values, format=format)


def top_logprobs(asked: bool, top: int) -> int | None:
    """None when log-probabilities are not asked for, else how many alternatives per token.
    The bound is checked whether or not they are asked for, as Ollama does (with its words)."""
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ClientError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if asked else None


class _Logprobs(_Body):
    """Ollama's `logprobs` and `top_logprobs` (also OpenAI's chat spelling of them)."""

    logprobs: StrictBool = False
    top_logprobs: StrictInt = 0

    def wanted_logprobs(self) -> int | None:
        return top_logprobs(self.logprobs, self.top_logprobs)


KeepAlive = StrictStr | StrictInt | StrictFloat | None
# true/false or a level; any other string is refused with Ollama's text (models.thinking.parse_think)
Think = StrictBool | StrictStr | None


class GenerateRequest(_Logprobs):
    model: StrictStr
    prompt: StrictStr = ""
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    raw: StrictBool = False
    stream: StrictBool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    images: list[StrictStr] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: KeepAlive = None
    shift: StrictBool | None = None  # a full context shifts (default) or ends the generation
    context: list[StrictInt] | None = None  # an earlier reply's `context`: this prompt continues it
    think: Think = None
    priority: StrictStr | None = None  # corral's: interactive | batch (as X-Corral-Priority)
    deadline: Number | None = None  # corral's: seconds from now (as X-Corral-Deadline)


class ToolCall(_Body):
    id: StrictStr | None = None
    function: dict[str, Any]


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr = ""
    thinking: StrictStr | None = None
    images: list[StrictStr] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: StrictStr | None = None  # a tool result: the tool that gave it
    tool_call_id: StrictStr | None = None  # ... and the call it answers


class ChatRequest(_Logprobs):
    model: StrictStr
    messages: list[Message] = Field(default_factory=list)
    stream: StrictBool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: KeepAlive = None
    shift: StrictBool | None = None
    think: Think = None
    priority: StrictStr | None = None  # corral's: interactive | batch (as X-Corral-Priority)
    deadline: Number | None = None  # corral's: seconds from now (as X-Corral-Deadline)


class ModelRequest(_Body):
    """Bodies that name one model: show, delete, pull."""

    model: StrictStr | None = None
    name: StrictStr | None = None  # the older spelling Ollama still accepts
    insecure: StrictBool = False
    stream: StrictBool = True

    @property
    def target(self) -> str:
        return self.model or self.name or ""


class ShowRequest(ModelRequest):
    verbose: StrictBool = False


class CopyRequest(_Body):
    source: StrictStr
    destination: StrictStr


class EmbedRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr] = Field(default_factory=list)
    truncate: StrictBool = True
    dimensions: StrictInt | None = None  # as Ollama: used when 0 < dimensions < the vector's size
    options: Options = Field(default_factory=Options)
    keep_alive: KeepAlive = None


class LegacyEmbeddingsRequest(_Body):
    model: StrictStr
    prompt: StrictStr = ""
    options: Options = Field(default_factory=Options)
    keep_alive: KeepAlive = None


class CreateRequest(_Body):
    """Ollama's JSON form of /api/create, or the older {"name", "modelfile"} form."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

    model: StrictStr | None = None
    name: StrictStr | None = None
    from_: StrictStr | None = Field(None, alias="from")
    files: dict[StrictStr, StrictStr] | None = None
    draft_files: dict[StrictStr, StrictStr] | None = None  # a draft model's GGUF (speculative decoding)
    draft_quantize: StrictStr | None = None  # Ollama's; corral quantizes nothing
    template: StrictStr | None = None
    system: StrictStr | None = None
    license: StrictStr | list[StrictStr] | None = None
    parameters: dict[StrictStr, Any] | None = None
    messages: list[Message] | None = None  # a conversation the model starts every chat with
    modelfile: StrictStr | None = None
    stream: StrictBool = True

    @property
    def target(self) -> str:
        return self.model or self.name or ""
