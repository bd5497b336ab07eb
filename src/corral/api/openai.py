"""OpenAI-compatible /v1/* routes: the same jobs as /api/*, in OpenAI's shapes (SSE when streaming)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.jobs import Job, collect
from corral.api.logprobs import CompletionLogprobs, chat_logprobs
from corral.api.openai_schemas import ChatCompletionRequest, CompletionRequest, OpenAIEmbeddingsRequest
from corral.api.schemas import Options
from corral.api.vectors import shaped
from corral.errors import ClientError
from corral.models.store import ModelName
from corral.models.thinking import think_from_effort
from corral.models.tool_calls import ToolCall
from corral.runner.protocol import TokenLogprob
from corral.scheduler.events import Done, DoneReason, Event, Failed, Text, Thinking, ToolCalls

router = APIRouter(prefix="/v1")

FINGERPRINT = "fp_corral"


def openai_error(status: int, message: str) -> dict:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
            429: "rate_limit_error", 503: "server_busy", 504: "timeout_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(done: Done) -> dict:
    prompt, completion = done.prompt_eval_count, done.eval_count
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(done: Done) -> str:
    if done.tool_calls:
        return "tool_calls"
    return "length" if done.reason == DoneReason.LENGTH else "stop"


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict]:
    """As Ollama's ToToolCalls: the call's id and index, arguments as a JSON string."""
    return [{"id": c.id, "index": c.index, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in calls]


LogprobShape = Callable[[Sequence[TokenLogprob]], dict]


async def _reply(events: AsyncIterator[Event], model: str, obj: str, stream: bool, include_usage: bool,
                 choice: Callable[[str, str | None, bool], dict], logprobs: LogprobShape | None = None) -> Response:
    """`choice(text, finish_reason, first)` shapes one choice for this endpoint; `logprobs`
    shapes its tokens' log-probabilities, when the request asked for them."""
    base = {"id": f"{'chatcmpl' if obj.startswith('chat') else 'cmpl'}-{secrets.token_hex(12)}",
            "created": int(time.time()), "model": model, "system_fingerprint": FINGERPRINT}
    if stream:
        async def sse() -> AsyncIterator[bytes]:
            first = True
            async for ev in events:
                match ev:
                    case Text(text=text, logprobs=entries):
                        one = choice(text, None, first)
                        if logprobs and entries:
                            one["logprobs"] = logprobs(entries)
                        chunk = {**base, "object": f"{obj}.chunk", "choices": [one]}
                        first = False
                    case Done():
                        chunk = {**base, "object": f"{obj}.chunk", "choices": [choice("", _finish(ev), first)]}
                        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                        if include_usage:
                            chunk = {**base, "object": f"{obj}.chunk", "choices": [], "usage": _usage(ev)}
                            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                        break
                    case Thinking(text=text) if obj == "chat.completion":
                        # Ollama's layer: the reasoning in its own delta field
                        delta: dict[str, Any] = {"reasoning": text}
                        if first:
                            delta = {"role": "assistant", **delta}
                        chunk = {**base, "object": f"{obj}.chunk",
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                        first = False
                    case ToolCalls(calls=calls):
                        delta = {"role": "assistant", "tool_calls": openai_tool_calls(calls)}
                        chunk = {**base, "object": f"{obj}.chunk",
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                        first = False
                    case Failed(status=status, message=message):
                        chunk = openai_error(status, message)
                    case _:
                        continue  # queue positions are an Ollama-API extension
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    result = await collect(events)
    if result.failed:
        failed = result.failed
        return JSONResponse(openai_error(failed.status, failed.message), status_code=failed.status)
    assert result.done is not None
    only = choice(result.text, _finish(result.done), True)
    if logprobs:
        only["logprobs"] = logprobs(result.logprobs)
    if result.calls:
        only["message"]["tool_calls"] = openai_tool_calls(result.calls)
    if result.thinking and "message" in only:
        only["message"]["reasoning"] = result.thinking
    return JSONResponse({**base, "object": obj, "choices": [only], "usage": _usage(result.done)})


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = body.wanted_logprobs()
    job = Job(request.app.state.corral, body.model, body.options(max_tokens), None, body.priority, body.deadline)

    def choice(text: str, finish: str | None, first: bool) -> dict:
        if body.stream:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta if text or first else {}, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    format = body.response_format.as_format() if body.response_format else None
    images = [p for m in body.messages if isinstance(m.content, list) for p in m.content if p.type == "image_url"]
    think = job.check("chat", body.model, think_from_effort(body.effort), tools=body.tools, images=images)
    events = job.chat(body.chat_messages(), body.tools, format, think=think, logprobs=logprobs)
    return await _reply(events, body.model, "chat.completion", body.stream,
                        body.include_usage, choice, chat_logprobs if logprobs is not None else None)


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise ClientError("prompt: exactly one prompt per request is supported")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    # As Ollama: no cap unless max_tokens is given (OpenAI's own default is 16), and the prompt goes
    # through the model's template as /api/generate's does.
    logprobs = body.wanted_logprobs()
    job = Job(request.app.state.corral, body.model, body.options(body.max_tokens), None, body.priority, body.deadline)

    def choice(text: str, finish: str | None, first: bool) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    think = job.check("generate", body.model, None, suffix=body.suffix)
    rendered = await asyncio.to_thread(job.generate_prompt, prompt, None, None, body.suffix, think=think)
    # As Ollama's layer: a thinking model's reasoning is split off and not part of the text.
    events = job.split(job.run(rendered.text, rendered.stop, logprobs=logprobs), rendered.text, think)
    return await _reply(events, body.model, "text_completion", body.stream, body.include_usage, choice,
                        CompletionLogprobs() if logprobs is not None else None)


def _base64_floats(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32s (what the openai client asks for by default)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _model_entry(name: str, created: float) -> dict:
    return {"id": name, "object": "model", "created": int(created), "owned_by": "library"}


@router.get("/models")
async def list_models(request: Request) -> dict:
    store = request.app.state.corral.store
    return {"object": "list", "data": [_model_entry(m.name.short, m.modified_at.timestamp()) for m in store.list()]}


@router.get("/models/{model:path}")
async def get_model(model: str, request: Request) -> dict:
    manifest = request.app.state.corral.store.manifest(ModelName.parse(model))
    return _model_entry(manifest.name.short, manifest.modified_at.timestamp())


@router.post("/embeddings")
async def embeddings(body: OpenAIEmbeddingsRequest, request: Request) -> dict:
    """As Ollama's EmbeddingsMiddleware over /api/embed: "" is one empty input, no input or an
    empty list is refused, token arrays are not accepted (the schema's strings)."""
    encoding = (body.encoding_format or "float").lower()
    if encoding not in ("float", "base64"):
        raise ClientError(f"Invalid value for 'encoding_format' = {body.encoding_format}. "
                          "Supported values: ['float', 'base64'].")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise ClientError("invalid input")
    job = Job(request.app.state.corral, body.model, Options(), None)
    result = await job.embed(inputs, True, lambda v: shaped(v, body.dimensions))
    encode = _base64_floats if encoding == "base64" else (lambda v: v)
    tokens = result.prompt_eval_count
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
