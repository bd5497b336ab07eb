"""Ollama's /api/* routes: validate, hand to the scheduler, shape NDJSON or JSON replies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from corral import OLLAMA_API_VERSION, __version__
from corral.api.context import AppContext
from corral.api.jobs import Job, collect, now_iso
from corral.api.logprobs import ollama_logprobs
from corral.api.models import details
from corral.api.schemas import ChatRequest, EmbedRequest, GenerateRequest, LegacyEmbeddingsRequest
from corral.api.vectors import normalize, shaped
from corral.config import FOREVER
from corral.errors import ClientError
from corral.models.embedding import legacy_embeddings_raw
from corral.models.template import ChatPrompt
from corral.models.tool_calls import ToolCall
from corral.scheduler.events import Done, Event, Failed, Queued, Text, Thinking, ToolCalls
from corral.scheduler.snapshot import RunnerView

router = APIRouter()

NDJSON = "application/x-ndjson"


def _ctx(request: Request) -> AppContext:
    return request.app.state.corral


@router.get("/")
@router.head("/")
async def root() -> PlainTextResponse:
    return PlainTextResponse("corral is running")


@router.get("/api/version")
@router.head("/api/version")
async def version() -> dict:
    return {"version": OLLAMA_API_VERSION, "corral_version": __version__}


def _calls(calls: tuple[ToolCall, ...] | list[ToolCall]) -> list[dict]:
    """Ollama's api.ToolCall: id, and the function's index, name and arguments."""
    return [{"id": c.id, "function": {"index": c.index, "name": c.name, "arguments": c.arguments}} for c in calls]


def _put(obj: dict, key: str, value: Any) -> dict:
    """A field of the answer: in the message for /api/chat, beside `response` for /api/generate."""
    obj.get("message", obj)[key] = value
    return obj


async def _reply(job: Job, events: AsyncIterator[Event], stream: bool,
                 shape: Callable[[str], dict]) -> Response:
    """NDJSON when streaming; else one object (or a JSON error with its status)."""
    if stream:
        async def lines() -> AsyncIterator[bytes]:
            async for ev in events:
                match ev:
                    case Text(text=text, logprobs=logprobs):
                        obj = {**shape(text), "done": False}
                        if logprobs:
                            obj["logprobs"] = ollama_logprobs(logprobs)
                    case Thinking(text=text):
                        obj = _put({**shape(""), "done": False}, "thinking", text)
                    case ToolCalls(calls=calls):
                        obj = _put({**shape(""), "done": False}, "tool_calls", _calls(calls))
                    case Queued(position=position, eta_s=eta):
                        # corral's own fields: where a waiting request stands, and when it should start.
                        obj = {**shape(""), "done": False, "queue_position": position}
                        if eta is not None:
                            obj["eta_s"] = round(eta, 2)
                    case Done():
                        obj = {**shape(""), **job.final_stats(ev)}
                    case Failed(message=message):
                        obj = {"error": message}
                    case _:
                        continue
                yield json.dumps(obj, ensure_ascii=False).encode() + b"\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    result = await collect(events)
    if result.failed:
        return JSONResponse({"error": result.failed.message}, status_code=result.failed.status)
    assert result.done is not None
    obj = {**shape(result.text), **job.final_stats(result.done)}
    if result.thinking:
        _put(obj, "thinking", result.thinking)
    if result.calls:
        _put(obj, "tool_calls", _calls(result.calls))
    if result.logprobs:
        obj["logprobs"] = ollama_logprobs(result.logprobs)
    return JSONResponse(obj)


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request) -> Response:
    ctx = _ctx(request)
    logprobs = body.wanted_logprobs()  # as Ollama: checked before the model is looked up
    job = Job(ctx, body.model, body.options, body.keep_alive, body.priority, body.deadline)
    shape = lambda text: {"model": body.model, "created_at": now_iso(), "response": text}
    if not body.prompt and job.keep_alive == 0:
        return JSONResponse(await job.load_or_unload(shape))
    if body.raw and (body.template or body.system or body.context):
        raise ClientError("raw mode does not support template, system, or context")
    think = job.check("generate", body.model, body.think, suffix=body.suffix, images=body.images)
    if not body.prompt:
        return JSONResponse(await job.load_or_unload(shape))
    if body.raw:
        rendered = ChatPrompt(body.prompt)
    else:
        rendered = await asyncio.to_thread(job.generate_prompt, body.prompt, body.system, body.template,
                                           body.suffix, continues=bool(body.context), think=think)
    # As Ollama: every templated answer ends with its `context` (the prompt's and answer's tokens),
    # which a next request can send back to continue from.
    events = job.run(rendered.text, rendered.stop, body.format, body.shift, context=body.context,
                     want_context=not body.raw, logprobs=logprobs)
    return await _reply(job, job.split(events, rendered.text, think), body.stream, shape)


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    ctx = _ctx(request)
    logprobs = body.wanted_logprobs()
    job = Job(ctx, body.model, body.options, body.keep_alive, body.priority, body.deadline)
    shape = lambda text: {"model": body.model, "created_at": now_iso(),
                          "message": {"role": "assistant", "content": text}}
    if not body.messages and job.keep_alive == 0:
        return JSONResponse(await job.load_or_unload(shape))
    images = [image for m in body.messages for image in m.images or ()]
    think = job.check("chat", body.model, body.think, tools=body.tools, images=images)
    if not body.messages:
        return JSONResponse(await job.load_or_unload(shape))
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    events = job.chat(messages, body.tools, body.format, body.shift, think, logprobs)
    return await _reply(job, events, body.stream, shape)


def _expires_at(runner: RunnerView) -> str:
    if runner.keep_alive == FOREVER or runner.expires_at == FOREVER:
        return "2318-11-26T00:00:00Z"  # what Ollama shows for "forever"
    at = runner.expires_at or (time.time() + runner.keep_alive)
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@router.get("/api/ps")
async def ps(request: Request) -> dict:
    models = []
    snap = _ctx(request).scheduler.snapshot()
    for r in snap.runners:
        models.append({
            "name": r.name, "model": r.name, "size": r.size, "size_vram": r.size if r.on_gpu else 0,
            "digest": r.digest.removeprefix("sha256:"), "details": details(r.info),
            "expires_at": _expires_at(r), "context_length": r.context_length,
            # corral's own fields
            "state": r.state, "slots_busy": r.slots_busy, "slots_total": r.slots_total,
            "slots_reserved": r.slots_reserved, "queue": r.queued,
            "size_measured": r.size_measured, "pid": r.pid, "device": r.device, "threads": r.threads,
            "health": r.health, "restarts": r.restarts, "exact": r.exact, "kv_cache_type": r.kv_type,
        })
    # corral's own: each model's waiting requests in service order, with predicted starts.
    queues = {name: [{"position": q.position, "eta_s": None if q.eta_s is None else round(q.eta_s, 2),
                      "waited_s": round(q.waited_s, 2), "tenant": q.tenant, "lane": q.lane} for q in m.queue]
              for name, m in snap.models.items() if m.queue}
    return {"models": models, "queues": queues}


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> dict:
    job = Job(_ctx(request), body.model, body.options, body.keep_alive)
    # As Ollama: an empty string or list embeds nothing, but loads the model (unloads: keep_alive 0).
    inputs = ([body.input] if body.input else []) if isinstance(body.input, str) else body.input
    if not inputs:
        await job.load_or_unload(lambda _: {})
        return {"model": body.model, "embeddings": []}
    result = await job.embed(inputs, body.truncate, lambda v: shaped(v, body.dimensions))
    stats = {"total_duration": result.total_duration, "load_duration": result.load_duration,
             "prompt_eval_count": result.prompt_eval_count}
    # Ollama's EmbedResponse leaves out zero counts and durations (omitempty).
    return {"model": body.model, "embeddings": result.vectors, **{k: v for k, v in stats.items() if v}}


@router.post("/api/embeddings")
async def embeddings_legacy(body: LegacyEmbeddingsRequest, request: Request) -> dict:
    job = Job(_ctx(request), body.model, body.options, body.keep_alive)
    if not body.prompt:  # as Ollama: loads the model, embeds nothing
        await job.load_or_unload(lambda _: {})
        return {"embedding": []}
    # Not cut to the context: Ollama hands the prompt to the runner whole, and a long one fails.
    raw = legacy_embeddings_raw(job.spec.info.metadata)
    result = await job.embed([body.prompt], truncate=False, shape=(lambda v: v) if raw else normalize)
    return {"embedding": result.vectors[0]}
