"""Anthropic's Messages API (/v1/messages), as Ollama serves it: a chat job in Anthropic's shapes.

The reply is a message of content blocks (text, then tool_use); streaming sends Ollama's SSE events
(message_start, content_block_start/delta/stop per block, message_delta with the stop reason and
usage, message_stop). Ollama's done_reason maps to stop_reason as in its mapStopReason: a stop
string ends with "stop" there too, so it reads as end_turn.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.anthropic_schemas import MessagesRequest
from corral.api.jobs import Collected, Job, collect
from corral.errors import RequestFailed
from corral.models.tool_calls import ToolCall
from corral.scheduler.events import Done, DoneReason, Event, Failed, Queued, Text, ToolCalls

router = APIRouter(prefix="/v1")

PREFIX = "/v1/messages"

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def is_anthropic_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def anthropic_error(status: int, message: str) -> dict:
    """Anthropic's error object; the type follows the status as in Ollama's NewError."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": new_id("req")}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def stop_reason(done: Done) -> str | None:
    if done.tool_calls:
        return "tool_use"
    match done.reason:
        case DoneReason.STOP:
            return "end_turn"
        case DoneReason.LENGTH:
            return "max_tokens"
    return "stop_sequence"  # Ollama's answer for any other non-empty reason


def _usage(done: Done) -> dict[str, int]:
    return {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count}


def tool_use_blocks(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Parsed tool calls → tool_use blocks, with the ids the parser gave them (Ollama's)."""
    return [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls]


def message_response(message_id: str, model: str, result: Collected) -> dict[str, Any]:
    """A finished chat as a non-streaming message (Ollama's ToMessagesResponse)."""
    assert result.done is not None
    content: list[dict[str, Any]] = [{"type": "text", "text": result.text}] if result.text else []
    content += tool_use_blocks(result.calls)
    reply: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": model,
                             "content": content}
    if reason := stop_reason(result.done):
        reply["stop_reason"] = reason
    return {**reply, "usage": _usage(result.done)}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


class MessageStream:
    """corral's events → Anthropic's stream events, as Ollama's StreamConverter: message_start at
    the first event, a text block opened at the first text, closed before tool_use blocks (each
    whole: start, one input_json_delta, stop) and at the end."""

    def __init__(self, message_id: str, model: str, estimated_input_tokens: int) -> None:
        self.message_id, self.model, self.estimate = message_id, model, estimated_input_tokens
        self.started = False
        self.index = 0
        self.text_open = False
        self.tool_calls = False

    def feed(self, ev: Event) -> list[tuple[str, dict[str, Any]]]:
        """The events `ev` becomes; after a Done or Failed the stream is over."""
        if isinstance(ev, Failed):  # a failure after the reply began: Anthropic's error event
            return [("error", anthropic_error(ev.status, ev.message))]
        out = [] if self.started else [self._start(ev)]
        match ev:
            case Text(text=text) if text:
                if not self.text_open:
                    self.text_open = True
                    out.append(self._block_start({"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": text}))
            case ToolCalls(calls=calls):
                out += self._close_text()
                for block in tool_use_blocks(calls):
                    out.append(self._block_start({**block, "input": {}}))
                    partial = json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
                    out.append(self._delta({"type": "input_json_delta", "partial_json": partial}))
                    out.append(self._block_stop())
                self.tool_calls = True
            case Done():
                out += self._close_text()
                delta = {"stop_reason": reason} if (reason := stop_reason(ev)) else {}
                out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(ev)}))
                out.append(("message_stop", {"type": "message_stop"}))
        return out

    def _start(self, ev: Event) -> tuple[str, dict[str, Any]]:
        self.started = True
        # Ollama has the prompt's token count only at the end; until then, its estimate.
        tokens = ev.prompt_eval_count if isinstance(ev, Done) else self.estimate
        return ("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "usage": {"input_tokens": tokens, "output_tokens": 0}}})

    def _block_start(self, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _block_stop(self) -> tuple[str, dict[str, Any]]:
        stop = ("content_block_stop", {"type": "content_block_stop", "index": self.index})
        self.index += 1
        return stop

    def _close_text(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.text_open:
            return []
        self.text_open = False
        return [self._block_stop()]


@router.post("/messages")
async def messages(body: MessagesRequest, request: Request) -> Response:
    body.check()
    chat, tools = body.chat_messages(), body.chat_tools()
    job = Job(request.app.state.corral, body.model, body.options(), None)
    # Ollama's /v1/messages relaxes thinking (a model that cannot think is not refused), but
    # tools on a model without them are its chat handler's 400.
    think = job.check("chat", body.model, None, tools=tools)
    events = job.chat(chat, tools, think=think)
    message_id = new_id("msg")
    if body.stream:
        stream = MessageStream(message_id, body.model, body.estimated_input_tokens())

        async def lines() -> AsyncIterator[bytes]:
            async for ev in events:
                if isinstance(ev, Queued):
                    continue  # a queue position is an Ollama-API extension
                for name, data in stream.feed(ev):
                    yield sse(name, data)
                if isinstance(ev, Done | Failed):
                    break

        return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    result = await collect(events)
    if result.failed:
        raise RequestFailed(result.failed.status, result.failed.message)
    return JSONResponse(message_response(message_id, body.model, result))
