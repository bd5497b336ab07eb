"""POST /v1/responses: the OpenAI Responses API as Ollama serves it (stateless; what Codex CLI
speaks). The request becomes a chat (responses_input), runs as any chat job, and comes back as a
response object (responses_output) or SSE events (responses_stream)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.context import AppContext
from corral.api.jobs import Job, collect
from corral.api.openai import openai_error
from corral.api.responses_input import to_chat
from corral.api.responses_output import ResponseHead, function_call_items, message_item, new_id, usage
from corral.api.responses_schemas import ResponsesRequest
from corral.api.responses_stream import sse

router = APIRouter(prefix="/v1")


@router.post("/responses")
async def responses(body: ResponsesRequest, request: Request) -> Response:
    chat = to_chat(body)
    ctx: AppContext = request.app.state.corral
    job = Job(ctx, body.model, chat.options, None)
    think = job.check("chat", body.model, chat.think, tools=chat.tools)
    events = job.chat(chat.messages, chat.tools, chat.format, think=think)
    head = ResponseHead(body)
    if body.stream:
        return StreamingResponse(sse(events, head), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    result = await collect(events)
    if result.failed:
        return JSONResponse(openai_error(result.failed.status, result.failed.message),
                            status_code=result.failed.status)
    assert result.done is not None
    # As Ollama: a reply with calls is its calls (any text beside them is not an output item).
    output = (function_call_items(result.calls, f"fc_{head.id}") if result.calls
              else [message_item(new_id("msg"), result.text)])
    return JSONResponse(head.build("completed", output, usage(result.done)))
