"""OpenAI's request bodies (/v1/chat/completions, /v1/completions, /v1/embeddings) as pydantic
models, read as Ollama's OpenAI layer reads them and turned into Ollama's options and messages."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from corral.api.schemas import Number, Options, _Body, _Logprobs, top_logprobs
from corral.errors import ClientError


class ContentPart(_Body):
    type: StrictStr
    text: StrictStr | None = None


class OpenAIMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None
    reasoning: StrictStr | None = None  # an earlier answer's reasoning, as Ollama's layer reads it

    def as_chat(self) -> dict[str, Any]:
        """The message as a chat template expects it: plain-text content, Ollama's roles."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text or "" for part in content if part.type == "text")
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:  # OpenAI sends arguments as a JSON string; templates expect an object
            message["tool_calls"] = [{"id": c.get("id") or "",
                                      "function": {"name": _function(c).get("name"),
                                                   "arguments": _json_object(_function(c).get("arguments"))}}
                                     for c in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.reasoning:
            message["thinking"] = self.reasoning
        if self.role == "tool" and self.name:
            message["tool_name"] = self.name
        return message


def _function(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    return function if isinstance(function, dict) else {}


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class StreamOptions(_Body):
    include_usage: StrictBool = False


class _OpenAISampling(_Body):
    model: StrictStr
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    max_tokens: StrictInt | None = Field(None, ge=0)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(1, ge=1, le=1)
    user: StrictStr | None = None
    priority: StrictStr | None = None  # corral's: interactive | batch (as X-Corral-Priority)
    deadline: Number | None = None  # corral's: seconds from now (as X-Corral-Deadline)

    def options(self, max_tokens: int | None) -> Options:
        # As Ollama's OpenAI layer: OpenAI's defaults (temperature 1, top_p 1), not Ollama's.
        return Options(temperature=1.0 if self.temperature is None else self.temperature,
                       top_p=1.0 if self.top_p is None else self.top_p, seed=self.seed, stop=self.stop,
                       num_predict=max_tokens, frequency_penalty=self.frequency_penalty,
                       presence_penalty=self.presence_penalty)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    def as_format(self) -> Any:
        """OpenAI's response_format as Ollama's `format`."""
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            schema = (self.json_schema or {}).get("schema")
            if not isinstance(schema, dict):
                raise ClientError("response_format.json_schema.schema must be a JSON schema object")
            return schema
        return None


class ReasoningOption(_Body):
    effort: StrictStr | None = None


class ChatCompletionRequest(_OpenAISampling, _Logprobs):
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=0)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    reasoning: ReasoningOption | None = None  # {"effort": ...}, ahead of reasoning_effort (Ollama's order)
    reasoning_effort: StrictStr | None = None

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning is not None else self.reasoning_effort

    def chat_messages(self) -> list[dict[str, Any]]:
        """The messages as /api/chat's; a tool result without a name takes the name of the call
        its tool_call_id answers (the last such call, as Ollama's nameFromToolCallID)."""
        names = {c.get("id"): _function(c).get("name")
                 for m in self.messages for c in m.tool_calls or () if isinstance(c.get("id"), str)}
        chat = [m.as_chat() for m in self.messages]
        for message in chat:
            if message["role"] == "tool" and "tool_name" not in message and names.get(message.get("tool_call_id")):
                message["tool_name"] = names[message["tool_call_id"]]
        return chat


class CompletionRequest(_OpenAISampling):
    prompt: StrictStr | list[StrictStr]
    suffix: StrictStr | None = None
    logprobs: StrictInt | None = None  # legacy: the number of alternatives; as Ollama, 0 or less is off

    def wanted_logprobs(self) -> int | None:
        n = self.logprobs or 0
        return top_logprobs(n > 0, max(n, 0))


class OpenAIEmbeddingsRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr] | None = None  # none: "invalid input" (a 400), as Ollama
    dimensions: StrictInt | None = None
    encoding_format: StrictStr | None = None  # float or base64, any case (checked by the route)
    user: StrictStr | None = None
