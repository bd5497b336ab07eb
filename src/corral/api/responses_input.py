"""A Responses request as the chat it means, as Ollama's FromResponsesRequest builds it:
instructions → a system message, input items → messages (function_call → an assistant message's
tool_calls, function_call_output → a tool message), flat tools → chat tools, text.format → format,
reasoning.effort → think."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from corral.api.responses_schemas import (
    Content,
    FunctionCall,
    FunctionCallOutput,
    InputFile,
    InputImage,
    InputItem,
    InputMessage,
    ReasoningItem,
    ResponsesRequest,
    ResponsesTool,
)
from corral.api.schemas import Options
from corral.errors import ClientError
from corral.models.thinking import Think, think_from_effort


@dataclass(frozen=True, slots=True)
class ChatInput:
    """What Job.chat needs: messages and tools in the chat shape, the format, the options."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    format: Any
    options: Options
    think: Think | None


def to_chat(body: ResponsesRequest) -> ChatInput:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    messages.extend(_messages(body.input))
    if not messages:
        raise ClientError("input: nothing to answer (no input and no instructions)")
    # Ollama sends temperature 1.0 when none is given (OpenAI's default), top_p only when given.
    # OpenAI has no repeat penalty, so /v1 turns Ollama's off (as /v1/chat/completions does).
    temperature = 1.0 if body.temperature is None else body.temperature
    options = Options(temperature=temperature, top_p=body.top_p, num_predict=body.max_output_tokens,
                      repeat_penalty=1.0)
    tools = [tool for t in body.tools or [] for tool in _tools(t)]
    return ChatInput(messages, tools or None, _format(body), options, think_from_effort(body.reasoning.effort))


def _messages(items: list[InputItem]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    thinking = ""  # a reasoning item's text, for the assistant message that follows it
    for i, item in enumerate(items):
        match item:
            case ReasoningItem():
                thinking = item.encrypted_content or ""
            case InputMessage():
                text, images = _content(item.content)
                msg: dict[str, Any] = {"role": "system" if item.role == "developer" else item.role, "content": text}
                if images:
                    msg["images"] = images
                if msg["role"] == "assistant" and thinking:
                    msg["thinking"], thinking = thinking, ""
                after = items[i + 1] if i + 1 < len(items) else None
                answered = after.call_id if isinstance(after, FunctionCallOutput) else ""
                if msg["role"] == "assistant" and answered and _merge_into_call(messages, msg, answered):
                    continue
                messages.append(msg)
            case FunctionCall():
                call = {"id": item.call_id, "function": {"name": item.name, "arguments": _arguments(item)}}
                if messages and messages[-1]["role"] == "assistant":
                    last = messages[-1]
                    last["tool_calls"] = [*last.get("tool_calls", []), call]
                else:
                    last = {"role": "assistant", "content": "", "tool_calls": [call]}
                    messages.append(last)
                if thinking:
                    last["thinking"], thinking = thinking, ""
            case FunctionCallOutput():
                text, images = _content(item.output)
                tool: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": item.call_id}
                if images:
                    tool["images"] = images
                messages.append(tool)
            case _:
                pass  # a web_search_call: history only; the assistant message after it carries the result
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def _merge_into_call(messages: list[dict[str, Any]], msg: dict[str, Any], call_id: str) -> bool:
    """Responses may replay an assistant message between a function_call and its output; it joins
    the message holding that call, so the tool result follows the call it answers."""
    if not messages or messages[-1]["role"] != "assistant":
        return False
    last = messages[-1]
    if not any(c.get("id") == call_id for c in last.get("tool_calls", [])):
        return False
    last["content"] = "\n".join(part for part in (last["content"], msg["content"]) if part)
    if msg.get("images"):
        last["images"] = [*last.get("images", []), *msg["images"]]
    if msg.get("thinking"):
        last["thinking"] = msg["thinking"]
    return True


def _arguments(call: FunctionCall) -> dict[str, Any]:
    if not call.arguments:
        return {}
    try:
        args = json.loads(call.arguments)
    except ValueError as exc:
        raise ClientError(f"failed to parse function call arguments: {exc}") from None
    if not isinstance(args, dict):
        raise ClientError("failed to parse function call arguments: not a JSON object")
    return args


def _content(content: Content) -> tuple[str, list[str]]:
    """Text parts joined, and images (base64) from data URLs."""
    text: list[str] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, InputFile):
            raise ClientError("file inputs are not currently supported")
        if isinstance(part, InputImage):
            if part.image_url:  # a file_id alone is skipped, as Ollama does
                images.append(_image(part.image_url))
            continue
        text.append(part.text)
    return "".join(text), images


_IMAGE_PREFIXES = ("data:;base64,", *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")))


def _image(url: str) -> str:
    if url.startswith(("http://", "https://")):
        raise ClientError("image URLs are not currently supported, please use base64 encoded data instead")
    prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
    if prefix is None:
        raise ClientError("invalid image input")
    data = url[len(prefix):]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("invalid image input") from None
    return data


def _tools(tool: ResponsesTool, prefix: str = "") -> list[dict[str, Any]]:
    """Chat tools for one Responses tool; a namespace's members get "namespace." names."""
    if tool.type == "web_search":
        # Ollama runs this search itself through ollama.com; corral has no search to run.
        raise ClientError("the web_search tool is not supported")
    if tool.type == "namespace":
        inner = f"{prefix}{tool.name}." if tool.name else prefix
        return [t for member in tool.tools or [] for t in _tools(member, inner)]
    if not tool.name:
        raise ClientError(f"tools: a {tool.type} tool needs a name")
    name = tool.name if tool.name.startswith(prefix) else prefix + tool.name
    return [{"type": tool.type, "function": {"name": name, "description": tool.description or "",
                                             "parameters": tool.parameters or {}}}]


def _format(body: ResponsesRequest) -> Any:
    """text.format as Ollama's format: a json_schema's schema; json_object as "json" (Ollama maps
    only json_schema; corral also honours json_object, as /v1/chat/completions does)."""
    fmt = body.text.format if body.text else None
    if fmt is None:
        return None
    if fmt.type == "json_schema":
        return fmt.schema_
    return "json" if fmt.type == "json_object" else None
