"""OpenAI-compatible /v1/* routes: the same jobs as /api/*, in OpenAI's shapes (SSE when streaming)."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.jobs import Job, collect, with_tool_calls
from corral.api.logprobs import CompletionLogprobs, chat_logprobs
from corral.api.schemas import ChatCompletionRequest, CompletionRequest, OpenAIEmbeddingsRequest, Options
from corral.errors import ClientError
from corral.models.store import ModelName
from corral.runner.protocol import TokenLogprob
from corral.scheduler.events import Done, DoneReason, Event, Failed, Text, ToolCalls

router = APIRouter(prefix="/v1")

FINGERPRINT = "fp_corral"


def openai_error(status: int, message: str) -> dict:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
            503: "server_busy"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(done: Done) -> dict:
    prompt, completion = done.prompt_eval_count, done.eval_count
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(done: Done) -> str:
    if done.tool_calls:
        return "tool_calls"
    return "length" if done.reason == DoneReason.LENGTH else "stop"


def _openai_calls(calls: list[dict]) -> list[dict]:
    return [{"index": i, "id": f"call_{secrets.token_hex(8)}", "type": "function",
             "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])}}
            for i, c in enumerate(calls)]


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
                    case ToolCalls(calls=calls):
                        delta = {"role": "assistant", "tool_calls": _openai_calls(calls)}
                        chunk = {**base, "object": f"{obj}.chunk",
                                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
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
        only["message"] = {"role": "assistant", "content": result.text or None,
                           "tool_calls": [{k: v for k, v in c.items() if k != "index"}
                                          for c in _openai_calls(result.calls)]}
    return JSONResponse({**base, "object": obj, "choices": [only], "usage": _usage(result.done)})


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = body.wanted_logprobs()
    job = Job(request.app.state.corral, body.model, body.options(max_tokens), None)

    def choice(text: str, finish: str | None, first: bool) -> dict:
        if body.stream:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta if text or first else {}, "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}

    format = body.response_format.as_format() if body.response_format else None
    events = with_tool_calls(job.chat([m.as_chat() for m in body.messages], body.tools, format,
                                      logprobs=logprobs), body.tools)
    return await _reply(events, body.model, "chat.completion", body.stream,
                        body.include_usage, choice, chat_logprobs if logprobs is not None else None)


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise ClientError("prompt: exactly one prompt per request is supported")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    # OpenAI's default for this endpoint is 16 tokens.
    max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default for completions
    logprobs = body.wanted_logprobs()
    job = Job(request.app.state.corral, body.model, body.options(max_tokens), None)

    def choice(text: str, finish: str | None, first: bool) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    return await _reply(job.run(prompt, logprobs=logprobs), body.model, "text_completion", body.stream,
                        body.include_usage, choice, CompletionLogprobs() if logprobs is not None else None)


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
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs:
        raise ClientError("input must not be empty")
    result = await Job(request.app.state.corral, body.model, Options(), None).embed(inputs, True, body.dimensions)
    tokens = result["prompt_eval_count"]
    encode = _base64_floats if body.encoding_format == "base64" else (lambda v: v)
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                     for i, v in enumerate(result["embeddings"])],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
