"""POST /v1/responses: the OpenAI Responses API as Ollama serves it (stateless; what Codex CLI
speaks). The request becomes a chat (responses_input), runs as any chat job, and comes back as a
response object (responses_output) or SSE events (responses_stream)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.context import AppContext
from corral.api.jobs import Job, collect, with_tool_calls
from corral.api.openai import openai_error
from corral.api.responses_input import Think, to_chat
from corral.api.responses_output import ResponseHead, function_call_items, message_item, new_id, usage
from corral.api.responses_schemas import ResponsesRequest
from corral.api.responses_stream import sse
from corral.errors import ClientError
from corral.models.capabilities import Capability, model_capabilities
from corral.models.modelfile import load_extras
from corral.models.store import ModelName

router = APIRouter(prefix="/v1")


def _check_think(ctx: AppContext, job: Job, model: str, think: Think) -> None:
    """As Ollama's chat handler: asking a model that cannot think to think is a 400 (a reasoning
    effort of "none" is not asking). corral does not separate thinking from text, so for a
    model that can think the effort is accepted and has no further effect."""
    if think is None or think is False:
        return
    template = load_extras(ctx.store, ModelName.parse(model)).template
    if Capability.THINKING not in model_capabilities(job.spec.info, template):
        raise ClientError(f'"{model}" does not support thinking')


@router.post("/responses")
async def responses(body: ResponsesRequest, request: Request) -> Response:
    chat = to_chat(body)
    ctx: AppContext = request.app.state.corral
    job = Job(ctx, body.model, chat.options, None)
    _check_think(ctx, job, body.model, chat.think)
    events = with_tool_calls(job.chat(chat.messages, chat.tools, chat.format), chat.tools)
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
