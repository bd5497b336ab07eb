"""The wire contract of /v1/responses: pydantic models for the OpenAI Responses request as Ollama
reads it (openai/responses.go), strict as the rest of schemas.py.

Stateful fields (`previous_response_id`, `conversation`, `store`) and `tool_choice` are not
fields here: Ollama's ResponsesRequest has no such fields either, so Go's decoder drops them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag, field_validator
from pydantic_core import PydanticCustomError

from corral.api.schemas import Number, _Body


class InputText(_Body):
    type: Literal["input_text"]
    text: StrictStr = ""


class OutputText(_Body):
    """A previous reply's text, passed back as history."""

    type: Literal["output_text"]
    text: StrictStr = ""


class InputImage(_Body):
    type: Literal["input_image"]
    image_url: StrictStr | None = None
    file_id: StrictStr | None = None
    detail: StrictStr | None = None


class InputFile(_Body):
    type: Literal["input_file"]
    file_data: StrictStr | None = None
    file_id: StrictStr | None = None
    file_url: StrictStr | None = None
    filename: StrictStr | None = None


def _parts(value: Any) -> Any:
    # A string is shorthand for one input_text part (Ollama's ResponsesInputMessage.UnmarshalJSON).
    return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


ContentPart = Annotated[InputText | OutputText | InputImage | InputFile, Field(discriminator="type")]
Content = Annotated[list[ContentPart], BeforeValidator(_parts)]


class InputMessage(_Body):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Content = Field(default_factory=list)


class FunctionCall(_Body):
    """A call the model made in an earlier turn, replayed as history (Codex sends these back)."""

    type: Literal["function_call"]
    id: StrictStr | None = None
    call_id: StrictStr = ""
    name: StrictStr
    arguments: StrictStr = ""  # a JSON object, as a string


class FunctionCallOutput(_Body):
    """The client's result for a call: a string, or content parts whose text is joined."""

    type: Literal["function_call_output"]
    call_id: StrictStr = ""
    output: Content = Field(default_factory=list)


class ReasoningItem(_Body):
    """A reasoning item passed back: Ollama keeps its encrypted_content (plain text there) as
    the next assistant message's thinking."""

    type: Literal["reasoning"]
    id: StrictStr | None = None
    summary: list[dict[str, Any]] | None = None
    encrypted_content: StrictStr | None = None


class WebSearchCall(_Body):
    """A built-in search from an earlier turn: history only, the model never saw it as a call."""

    type: Literal["web_search_call"]
    id: StrictStr | None = None
    status: StrictStr | None = None


ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "web_search_call")


def _item_type(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        # {"role": ..., "content": ...} without a type is a message (the SDKs' shorthand).
        return "message" if not kind and value.get("role") else kind
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")] | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")] | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[WebSearchCall, Tag("web_search_call")],
    Discriminator(_item_type),
]


class ResponsesTool(_Body):
    """A tool in the Responses API's flat shape: {type, name, description, parameters}; a
    "namespace" groups member tools under its name."""

    type: StrictStr
    name: StrictStr = ""
    description: StrictStr | None = None
    strict: StrictBool | None = None
    parameters: dict[str, Any] | None = None
    tools: list[ResponsesTool] | None = None


class TextFormat(_Body):
    type: Literal["text", "json_schema", "json_object"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class Reasoning(_Body):
    effort: StrictStr | None = None
    summary: StrictStr | None = None
    generate_summary: StrictStr | None = None  # deprecated spelling of summary


class ResponsesRequest(_Body):
    model: StrictStr
    input: list[InputItem]  # a string is read as one user message
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=0)
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    stream: StrictBool = False
    tools: list[ResponsesTool] | None = None
    text: TextConfig | None = None
    reasoning: Reasoning = Field(default_factory=Reasoning)
    truncation: StrictStr | None = None
    background: StrictBool = False

    @field_validator("input", mode="before")
    @classmethod
    def _known_items(cls, value: Any) -> Any:
        # Said before the union is tried, so an unknown item reads as Ollama's error, not as
        # every member's mismatch.
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}] if value else []
        if not isinstance(value, list):
            raise PydanticCustomError("input", "must be a string or an array of input items")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise PydanticCustomError("input_item", "item {i}: an input item must be an object", {"i": i})
            kind = _item_type(item)
            if not kind:
                raise PydanticCustomError("input_item", "item {i}: input item missing required 'type' field",
                                          {"i": i})
            if kind not in ITEM_TYPES:
                raise PydanticCustomError("input_item", "item {i}: unknown input item type: {kind}",
                                          {"i": i, "kind": json.dumps(kind)})
        return value
