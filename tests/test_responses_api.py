"""/v1/responses (the OpenAI Responses API, as Ollama serves it) with the official openai client,
unchanged, on a live server; and the conversions it is built from, fed directly."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import SMOL
from test_tools import CALL_SCHEMA, tool_model  # noqa: F401 - the tool-aware model fixture

from corral.api.responses_input import to_chat
from corral.api.responses_output import ResponseHead, function_call_items
from corral.api.responses_schemas import ResponsesRequest
from corral.api.responses_stream import ResponseStream
from corral.errors import ClientError
from corral.models.thinking import think_from_effort
from corral.models.tool_calls import parse_tool_calls
from corral.scheduler.events import Done, DoneReason, Failed

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
COLOR = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 15}}, "required": ["color"]}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x")


# -- pure: the conversions --------------------------------------------------------------------------

def test_codex_input_becomes_a_chat():
    """What Codex sends back on its second turn: developer text, the user's message, the call the
    model made (with the assistant's text replayed between call and output), the call's output."""
    body = ResponsesRequest.model_validate({
        "model": SMOL, "instructions": "You are a coding agent.", "temperature": 0.2, "max_output_tokens": 50,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: on."}]},
            {"role": "user", "content": "Where am I?"},
            {"type": "reasoning", "summary": [], "encrypted_content": "Run pwd."},
            {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": '{"cmd": ["pwd"]}'},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "/tmp"}, {"type": "output_text", "text": "\n"}]},
        ],
        "tools": [{**WEATHER, "name": "shell"},
                  {"type": "namespace", "name": "fs", "tools": [{**WEATHER, "name": "read"}]}],
        "text": {"format": {"type": "json_schema", "name": "x", "schema": COLOR}},
    })
    chat = to_chat(body)
    assert chat.messages == [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "system", "content": "Sandbox: on."},
        {"role": "user", "content": "Where am I?"},
        {"role": "assistant", "content": "Checking.", "thinking": "Run pwd.",
         "tool_calls": [{"id": "call_1", "function": {"name": "shell", "arguments": {"cmd": ["pwd"]}}}]},
        {"role": "tool", "content": "/tmp\n", "tool_call_id": "call_1"},
    ]
    assert [t["function"]["name"] for t in chat.tools or []] == ["shell", "fs.read"]
    assert chat.tools and chat.tools[0]["function"]["parameters"] == WEATHER["parameters"]
    assert chat.format == COLOR
    assert (chat.options.temperature, chat.options.num_predict, chat.think) == (0.2, 50, None)
    # Ollama's default temperature is OpenAI's 1.0; json_object asks for JSON; "text" for nothing.
    plain = to_chat(ResponsesRequest.model_validate({"model": SMOL, "input": "hi"}))
    assert plain.messages == [{"role": "user", "content": "hi"}] and plain.options.temperature == 1.0
    assert plain.format is None and plain.tools is None
    for kind, expected in (("json_object", "json"), ("text", None)):
        body = ResponsesRequest.model_validate({"model": SMOL, "input": "hi", "text": {"format": {"type": kind}}})
        assert to_chat(body).format == expected


def test_reasoning_effort_as_ollama_maps_it():
    assert [think_from_effort(e) for e in (None, "", "none", "minimal", "low", "medium", "high", "max",
                                            "xhigh", "ultra")] == \
        [None, None, False, "low", "low", "medium", "high", "max", "max", "max"]
    with pytest.raises(ClientError, match="invalid reasoning value"):
        think_from_effort("extreme")


def test_tool_calls_become_function_call_items_and_events():
    """Calls as the parser gives them → function_call output items and their stream events."""
    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    content, calls = parse_tool_calls(text, {"get_weather"})
    assert content == "" and len(calls) == 2
    items = function_call_items(calls, "fc_x")
    assert [i["id"] for i in items] == ["fc_x_0", "fc_x_1"]
    assert [json.loads(i["arguments"]) for i in items] == [{"city": "Oslo"}, {"city": "Rome"}]
    assert all(i["type"] == "function_call" and i["status"] == "completed" and i["name"] == "get_weather"
               and i["call_id"].startswith("call_") for i in items)
    assert len({i["call_id"] for i in items}) == 2

    stream = ResponseStream(ResponseHead(ResponsesRequest.model_validate({"model": SMOL, "input": "x"})))
    events = [*stream.start(), *stream.delta("Let me check."), *stream.tool_calls(calls),
              *stream.done(Done(DoneReason.STOP, prompt_eval_count=7, eval_count=3))]
    per_call = ["response.output_item.added", "response.function_call_arguments.delta",
                "response.function_call_arguments.done", "response.output_item.done"]
    assert [kind for kind, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", *per_call, *per_call, "response.completed"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(kind == data["type"] for kind, data in events)
    final = events[-1][1]["response"]
    assert [(i["type"], i["status"]) for i in final["output"]] == \
        [("message", "completed"), ("function_call", "completed"), ("function_call", "completed")]
    assert final["output"][0]["content"][0]["text"] == "Let me check."
    assert [data["output_index"] for kind, data in events if kind == "response.output_item.done"] == [0, 1, 2]
    assert final["usage"]["total_tokens"] == 10 and final["status"] == "completed"
    failed = ResponseStream(stream.head).failed(Failed(500, "runner died"))
    assert failed[0][1]["response"]["status"] == "failed"
    assert failed[0][1]["response"]["error"]["message"] == "runner died"


def test_request_shapes_refused():
    bad = [{"model": SMOL, "input": 5}, {"model": SMOL, "input": [{"type": "zzz"}]},
           {"model": SMOL, "input": [{"content": "no role, no type"}]},
           {"model": SMOL, "input": [{"role": "tool", "content": "x"}]},
           {"model": SMOL, "input": [{"role": "user", "content": [{"type": "bogus"}]}]},
           {"model": SMOL, "input": "x", "max_output_tokens": "5"}]
    for body in bad:
        with pytest.raises(ValueError):
            ResponsesRequest.model_validate(body)
    for body, message in (
            ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}]},
             "failed to parse function call arguments"),
            ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
             "file inputs are not currently supported"),
            ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]},
             "image URLs are not currently supported"),
            ({"input": ""}, "nothing to answer"),
            ({"input": "x", "tools": [{"type": "web_search"}]}, "web_search"),
            ({"input": "x", "reasoning": {"effort": "extreme"}}, "invalid reasoning value")):
        with pytest.raises(ClientError, match=message):
            to_chat(ResponsesRequest.model_validate({"model": SMOL, **body}))


# -- live: the official client on smollm2 ------------------------------------------------------------

def test_response_and_stream_agree(client):
    kw = dict(model=SMOL, input="Name a color.", temperature=0, max_output_tokens=12)
    whole = client.responses.create(**kw)
    assert whole.object == "response" and whole.id.startswith("resp_") and whole.status == "completed"
    assert whole.output_text and whole.output[0].type == "message" and whole.output[0].id.startswith("msg_")
    assert whole.usage.input_tokens > 0 and 0 < whole.usage.output_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens
    assert whole.store is False and whole.previous_response_id is None and whole.temperature == 0

    events = list(client.responses.create(**kw, stream=True))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert deltas > 0 and [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text == whole.output_text
    assert events[-4].text == events[-3].part.text == text and events[-1].response.usage.output_tokens == whole.usage.output_tokens
    assert events[0].response.status == "in_progress" and final.status == "completed"
    assert final.id == events[0].response.id


def test_instructions_are_the_system_message(client):
    """instructions render as a system message: the same prompt and reply as a chat with it."""
    kw = dict(temperature=0, max_output_tokens=10)
    r = client.responses.create(model=SMOL, instructions="Answer in one word.", input="Name a fruit.", **kw)
    chat = client.chat.completions.create(
        model=SMOL, messages=[{"role": "system", "content": "Answer in one word."},
                              {"role": "user", "content": "Name a fruit."}],
        temperature=0, max_tokens=10)
    assert r.instructions == "Answer in one word."
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.output_text == chat.choices[0].message.content
    plain = client.responses.create(model=SMOL, input="Name a fruit.", **kw)
    assert plain.usage.input_tokens != r.usage.input_tokens  # the model's default system prompt went


def test_max_output_tokens(client):
    """The reply stops at max_output_tokens; as Ollama, the response still says "completed"
    (Ollama's Responses layer never reports "incomplete")."""
    r = client.responses.create(model=SMOL, input="Count from one to one hundred.", temperature=0,
                                max_output_tokens=4)
    assert 0 < r.usage.output_tokens <= 4 and r.max_output_tokens == 4
    assert r.status == "completed" and r.incomplete_details is None and r.output_text


def test_structured_output(client):
    r = client.responses.create(model=SMOL, input="Give a color as JSON.", temperature=0, max_output_tokens=30,
                                text={"format": {"type": "json_schema", "name": "color", "schema": COLOR}})
    assert isinstance(json.loads(r.output_text)["color"], str)
    assert r.text.format.type == "json_schema" and r.text.format.name == "color"
    r = client.responses.create(model=SMOL, input='Reply in JSON with one key "color".', temperature=0,
                                max_output_tokens=40, text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(r.output_text), dict)


def test_function_call_round_trip(client, tool_model):
    """Turn one: the model calls a tool (constrained to a call, as test_tools does). Turn two, shaped
    as Codex sends it: the call and its output replayed as input items, the tools offered again.
    Turn two renders the same prompt, and gets the same answer, as the equivalent chat."""
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=tool_model, input=[ask], tools=[WEATHER], temperature=0,
                                    max_output_tokens=60,
                                    text={"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}})
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert call.id.startswith("fc_") and isinstance(json.loads(call.arguments)["city"], str)
    assert first.tools[0].name == "get_weather"

    streamed = list(client.responses.create(
        model=tool_model, input=[ask], tools=[WEATHER], temperature=0, max_output_tokens=60, stream=True,
        text={"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}}))
    assert [e.type for e in streamed] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert streamed[4].arguments == call.arguments and streamed[-1].response.output[0].name == "get_weather"

    replay = [ask, {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}]
    second = client.responses.create(model=tool_model, input=replay, tools=[WEATHER], temperature=0,
                                     max_output_tokens=20)
    chat = client.chat.completions.create(
        model=tool_model, temperature=0, max_tokens=20,
        tools=[{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}],
        messages=[ask, {"role": "assistant", "content": "",
                        "tool_calls": [{"id": call.call_id, "type": "function",
                                        "function": {"name": call.name, "arguments": call.arguments}}]},
                  {"role": "tool", "tool_call_id": call.call_id, "content": "18 degrees and sunny"}])
    assert second.status == "completed" and second.output
    assert second.usage.input_tokens == chat.usage.prompt_tokens > first.usage.input_tokens
    message = chat.choices[0].message
    if message.tool_calls:
        assert [o.name for o in second.output] == [c.function.name for c in message.tool_calls]
    else:
        assert second.output_text == message.content


def test_bad_requests_are_openai_errors(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="nosuch:1", input="x")
    assert "not found" in err.value.body["message"] and err.value.body["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nosuch:1", input="x", stream=True)
    bad = [dict(input="x", temperature=5), dict(input=123), dict(input=[{"type": "zzz"}]),
           dict(input="x", max_output_tokens="ten"), dict(input="x", reasoning={"effort": "extreme"}),
           dict(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}])]
    for kw in bad:
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model=SMOL, **kw)
        assert err.value.body["type"] == "invalid_request_error" and err.value.body["message"]
    # A model that cannot think, asked to reason: Ollama's 400; effort "none" is not asking.
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        client.responses.create(model=SMOL, input="x", reasoning={"effort": "high"})
    r = client.responses.create(model=SMOL, input="Hi", reasoning={"effort": "none"}, max_output_tokens=2,
                                previous_response_id="resp_unknown", store=True)
    # Stateless, as Ollama: previous_response_id is not read, nothing is stored.
    assert r.status == "completed" and r.previous_response_id is None and r.store is False
    assert r.reasoning.effort == "none"
