"""The Responses API's reply shapes, as Ollama writes them (openai/responses.go: ToResponse and
the stream converter's response object): output items, usage, the response object echoing the
request. Shared by the JSON reply and the SSE stream."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.api.openai import openai_tool_calls
from corral.api.responses_schemas import ResponsesRequest, ResponsesTool
from corral.models.tool_calls import ToolCall
from corral.scheduler.events import Done


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [output_text(text)] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def function_call_items(calls: Sequence[ToolCall], item_prefix: str) -> list[dict[str, Any]]:
    """Parsed tool calls as function_call items: a call_id to answer with, the arguments as a
    JSON string (OpenAI's shape)."""
    return [{"id": f"{item_prefix}_{i}", "type": "function_call", "status": "completed", "call_id": call["id"],
             "name": call["function"]["name"], "arguments": call["function"]["arguments"]}
            for i, call in enumerate(openai_tool_calls(calls))]


def usage(done: Done) -> dict[str, Any]:
    # Cached and reasoning token counts are not reported (Ollama sends 0 for both too).
    return {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count,
            "total_tokens": done.prompt_eval_count + done.eval_count,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _tool_echo(tool: ResponsesTool) -> dict[str, Any]:
    echo: dict[str, Any] = {"type": tool.type, "name": tool.name, "description": tool.description,
                            "strict": tool.strict, "parameters": tool.parameters}
    if tool.tools:
        echo["tools"] = [_tool_echo(t) for t in tool.tools]
    return echo


def _text_echo(request: ResponsesRequest) -> dict[str, Any]:
    fmt = request.text.format if request.text else None
    if fmt is None:
        return {"format": {"type": "text"}}
    return {"format": fmt.model_dump(by_alias=True, exclude_none=True)}


def _reasoning_echo(request: ResponsesRequest) -> dict[str, Any] | None:
    reasoning = request.reasoning
    if not reasoning.effort and not reasoning.summary:
        return None
    return {"effort": reasoning.effort or None, "summary": reasoning.summary or None}


@dataclass(frozen=True)
class ResponseHead:
    """One response's identity and the request it echoes; `build` makes the response object at
    any stage (in_progress while streaming, then completed or failed)."""

    request: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def build(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
              error: dict[str, Any] | None = None) -> dict[str, Any]:
        request = self.request
        finished = status in ("completed", "failed")
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "completed_at": int(time.time()) if finished else None,
            # Ollama reports "completed" even when max_output_tokens cut the reply short.
            "status": status, "incomplete_details": None, "model": request.model,
            "previous_response_id": None,  # stateless, as Ollama: the field is not read
            "instructions": request.instructions or None, "output": output, "error": error,
            "tools": [_tool_echo(t) for t in request.tools or []], "tool_choice": "auto",
            "truncation": request.truncation or "disabled", "parallel_tool_calls": True,
            "text": _text_echo(request),
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
            "temperature": 1.0 if request.temperature is None else request.temperature,
            "reasoning": _reasoning_echo(request), "usage": usage,
            "max_output_tokens": request.max_output_tokens, "max_tool_calls": None,
            "store": False,  # nothing is stored, whatever the request's `store` says
            "background": request.background, "service_tier": "default", "metadata": {},
            "safety_identifier": None, "prompt_cache_key": None,
        }
