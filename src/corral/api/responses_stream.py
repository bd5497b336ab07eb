"""A generation's events as the Responses API's SSE events, in the order Ollama's
ResponsesStreamConverter emits them, each with its `sequence_number`:

  response.created, response.in_progress,
  (text)  response.output_item.added, response.content_part.added, response.output_text.delta...,
          response.output_text.done, response.content_part.done, response.output_item.done,
  (calls) response.output_item.added, response.function_call_arguments.delta,
          response.function_call_arguments.done, response.output_item.done  (one group a call),
  response.completed (or response.failed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from corral.api.openai import openai_error
from corral.api.responses_output import ResponseHead, function_call_items, message_item, new_id, output_text, usage
from corral.models.tool_calls import ToolCall
from corral.scheduler.events import Done, Event, Failed, Text, ToolCalls

StreamEvent = tuple[str, dict[str, Any]]


class ResponseStream:
    """State across one stream: the sequence counter, the open message item, the items done."""

    def __init__(self, head: ResponseHead) -> None:
        self.head = head
        self.sequence = 0
        self.index = 0  # output_index of the next item
        self.items: list[dict[str, Any]] = []  # finished output items, in output order
        self.message_id = new_id("msg")
        self.text: str | None = None  # the open message's text; None while no message is open

    def _event(self, kind: str, **data: Any) -> StreamEvent:
        event = (kind, {"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return event

    def start(self) -> list[StreamEvent]:
        in_progress = self.head.build("in_progress", [])
        return [self._event("response.created", response=in_progress),
                self._event("response.in_progress", response=in_progress)]

    def delta(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        events = []
        if self.text is None:
            self.text = ""
            events += [self._event("response.output_item.added", output_index=self.index,
                                   item=message_item(self.message_id, "", "in_progress")),
                       self._event("response.content_part.added", item_id=self.message_id,
                                   output_index=self.index, content_index=0, part=output_text(""))]
        self.text += text
        events.append(self._event("response.output_text.delta", item_id=self.message_id, output_index=self.index,
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _close_message(self) -> list[StreamEvent]:
        if self.text is None:
            return []
        text, index, item = self.text, self.index, message_item(self.message_id, self.text)
        self.items.append(item)
        self.text, self.index = None, self.index + 1
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        return [self._event("response.output_text.done", **where, text=text, logprobs=[]),
                self._event("response.content_part.done", **where, part=output_text(text)),
                self._event("response.output_item.done", output_index=index, item=item)]

    def tool_calls(self, calls: Sequence[ToolCall]) -> list[StreamEvent]:
        """A call arrives whole (parsed at the end), so its arguments are one delta."""
        events = self._close_message()
        for item in function_call_items(calls, new_id("fc")):
            added = {**item, "status": "in_progress", "arguments": ""}
            where = {"item_id": item["id"], "output_index": self.index}
            events += [self._event("response.output_item.added", output_index=self.index, item=added),
                       self._event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
                       self._event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
                       self._event("response.output_item.done", output_index=self.index, item=item)]
            self.items.append(item)
            self.index += 1
        return events

    def done(self, done: Done) -> list[StreamEvent]:
        events = self._close_message()
        events.append(self._event("response.completed",
                                  response=self.head.build("completed", self.items, usage(done))))
        return events

    def failed(self, failed: Failed) -> list[StreamEvent]:
        error = openai_error(failed.status, failed.message)["error"]
        response = self.head.build("failed", self.items, error={"code": error["type"], "message": failed.message})
        return [self._event("response.failed", response=response)]


async def sse(events: AsyncIterator[Event], head: ResponseHead) -> AsyncIterator[bytes]:
    """The stream's bytes: `event: <type>` and `data: <json>` per event."""
    stream = ResponseStream(head)
    for kind, data in stream.start():
        yield _frame(kind, data)
    async for ev in events:
        match ev:
            case Text(text=text):
                out = stream.delta(text)
            case ToolCalls(calls=calls):
                out = stream.tool_calls(calls)
            case Done():
                out = stream.done(ev)
            case Failed():
                out = stream.failed(ev)
            case _:
                continue  # queue positions are an Ollama-API extension
        for kind, data in out:
            yield _frame(kind, data)
        if isinstance(ev, Done | Failed):
            return


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
