"""Anthropic's Messages API request, and its conversion to a chat, as Ollama's anthropic package does.

A message's content blocks become Ollama chat messages: text is joined, `tool_use` blocks become the
assistant's tool calls, and each `tool_result` block becomes a `tool` message (in a user turn, before
that turn's text). Tools' `input_schema` becomes the function `parameters` the template gets.
`tool_choice`, `thinking`, `metadata` are accepted and not applied (Ollama: not supported, or
relaxed to nothing for a model that cannot think). Ollama's server-side `web_search` tool needs
ollama.com, so tools of that type are not offered to the model.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from corral.api.schemas import Number, Options, _Body
from corral.errors import ClientError

# The roles a chat template knows (as /api/chat); Ollama lowercases what it is sent.
ROLES = ("system", "user", "assistant", "tool")


class ImageSource(_Body):
    type: StrictStr = ""
    media_type: StrictStr = ""
    data: StrictStr = ""
    url: StrictStr = ""

    def base64(self) -> str:
        """The image as the chat's base64 string; only inline base64 data, as Ollama."""
        if self.type != "base64":
            raise ClientError(f"invalid image source type: {self.type}. Only base64 images are supported.")
        try:
            return base64.b64encode(base64.b64decode(self.data, validate=True)).decode()
        except (binascii.Error, ValueError) as exc:
            raise ClientError(f"invalid base64 image data: {exc}") from None


class ContentBlock(_Body):
    type: StrictStr
    text: StrictStr | None = None  # text
    source: ImageSource | None = None  # image
    id: StrictStr = ""  # tool_use
    name: StrictStr = ""
    input: dict[str, Any] | None = None
    tool_use_id: StrictStr = ""  # tool_result
    content: StrictStr | list[Any] | dict[str, Any] | None = None
    is_error: StrictBool = False
    thinking: StrictStr | None = None  # thinking
    signature: StrictStr = ""


def _tool_result(content: str | list[Any] | dict[str, Any] | None) -> tuple[str, list[str]]:
    """A tool_result's content → (text, base64 images): a string, or text and image blocks."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []
    text, images = [], []
    for item in content:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "text" and isinstance(item.get("text"), str):
            text.append(item["text"])
        elif item.get("type") == "image":
            source = item.get("source")
            if not isinstance(source, dict):
                raise ClientError("invalid tool_result image source")
            fields = {k: v for k, v in source.items() if k in ("type", "media_type", "data") and isinstance(v, str)}
            images.append(ImageSource(**fields).base64())
    return "".join(text), images


class MessageParam(_Body):
    role: StrictStr
    content: StrictStr | list[ContentBlock] = Field(default_factory=list)

    def blocks(self) -> list[ContentBlock]:
        if isinstance(self.content, str):
            return [ContentBlock(type="text", text=self.content)]
        return self.content

    def as_chat(self) -> list[dict[str, Any]]:
        """This turn as chat messages, in Ollama's order (convertMessage)."""
        role = self.role.lower()
        if role not in ROLES:
            raise ClientError(f"invalid message role {self.role!r}: must be user or assistant")
        text: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        thinking = ""
        results: list[dict[str, Any]] = []
        for block in self.blocks():
            match block.type:
                case "text":
                    text.append(block.text or "")
                case "image":
                    if block.source is None:
                        raise ClientError("invalid image source")
                    images.append(block.source.base64())
                case "tool_use":
                    if not block.id:
                        raise ClientError("tool_use block missing required 'id' field")
                    if not block.name:
                        raise ClientError("tool_use block missing required 'name' field")
                    calls.append({"id": block.id, "function": {"name": block.name, "arguments": block.input or {}}})
                case "tool_result":
                    content, result_images = _tool_result(block.content)
                    result: dict[str, Any] = {"role": "tool", "content": content, "tool_call_id": block.tool_use_id}
                    if result_images:
                        result["images"] = result_images
                    results.append(result)
                case "thinking":
                    thinking = block.thinking or ""
                # Other block types (documents, server tool blocks) are skipped, as Ollama does.
        message: list[dict[str, Any]] = []
        if "".join(text) or images or calls or thinking:  # an empty turn is no message, as in Ollama
            message = [{"role": role, "content": "".join(text)}]
            for key, value in (("images", images), ("tool_calls", calls), ("thinking", thinking)):
                if value:
                    message[0][key] = value
        # A user turn answers the previous turn's calls first, then says what else it has to say.
        return [*results, *message] if role == "user" else [*message, *results]


class SystemBlock(_Body):
    type: StrictStr = ""
    text: StrictStr | None = None


class Tool(_Body):
    type: StrictStr = ""  # "custom", or a server tool such as "web_search_20250305"
    name: StrictStr = ""
    description: StrictStr = ""
    input_schema: dict[str, Any] | None = None

    def as_function(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.input_schema or {}}}


class ToolChoice(_Body):
    type: StrictStr
    name: StrictStr = ""
    disable_parallel_tool_use: StrictBool = False


class ThinkingConfig(_Body):
    type: StrictStr
    budget_tokens: StrictInt | None = None


class MessagesRequest(_Body):
    # Required fields default to empty so that the route can say what Ollama says when one is missing.
    model: StrictStr = ""
    max_tokens: StrictInt = 0
    messages: list[MessageParam] = Field(default_factory=list)
    system: StrictStr | list[SystemBlock] | None = None
    stream: StrictBool = False
    temperature: Number | None = Field(None, ge=0)
    top_p: Number | None = Field(None, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    stop_sequences: list[StrictStr] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None  # accepted, not applied (as Ollama)
    thinking: ThinkingConfig | None = None  # accepted; no model corral runs thinks
    metadata: dict[str, Any] | None = None

    def check(self) -> None:
        """Ollama's checks and messages, in its order."""
        if not self.model:
            raise ClientError("model is required")
        if self.max_tokens <= 0:
            raise ClientError("max_tokens is required and must be positive")
        if not self.messages:
            raise ClientError("messages is required")

    def system_text(self) -> str:
        if isinstance(self.system, list):
            return "".join(b.text or "" for b in self.system if b.type == "text")
        return self.system or ""

    def chat_messages(self) -> list[dict[str, Any]]:
        system = self.system_text()
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for turn in self.messages:
            messages.extend(turn.as_chat())
        return messages

    def chat_tools(self) -> list[dict[str, Any]] | None:
        tools = [t.as_function() for t in self.tools or () if not t.type.startswith("web_search")]
        return tools or None

    def options(self) -> Options:
        return Options(num_predict=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                       top_k=self.top_k, stop=self.stop_sequences or None)

    def estimated_input_tokens(self) -> int:
        """Ollama's estimate for message_start (the prompt is counted only at the end): a quarter
        of the characters of the system prompt, roles, text, tool blocks and tool definitions."""
        total = len(self.system_text())
        for turn in self.messages:
            total += len(turn.role) + sum(_block_chars(b) for b in turn.blocks())
        for tool in self.tools or ():
            total += len(tool.name) + len(tool.description) + len(_compact(tool.input_schema or {}))
        return total // 4 or (1 if self.messages or self.system is not None else 0)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _block_chars(block: ContentBlock) -> int:
    total = len(block.text or "") + len(block.thinking or "")
    if block.type in ("tool_use", "tool_result"):
        total += len(_compact(block.model_dump(exclude_none=True, exclude_defaults=True)))
    return total
