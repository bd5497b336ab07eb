"""The official anthropic client, unchanged, against corral's /v1/messages (Ollama's Anthropic API).

Live tests run smollm2:135m. Whether a 135M model calls a tool is not up to the test, so the
tool_use side is tested with the real parser's calls fed to the converter and read back by the
real SDK (over a mock transport), and the tool_result side by a multi-turn request that must render
exactly as the same chat does on /api/chat.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import httpx2  # the HTTP client this anthropic SDK is built on (a fork of httpx)
import ollama
import pytest
from conftest import MODELS, SMOL
from test_tools import TEMPLATE, tool_model  # noqa: F401 - the tool-aware model fixture

from corral.api.anthropic import MessageStream, message_response, sse
from corral.api.anthropic_schemas import MessagesRequest
from corral.api.jobs import Collected
from corral.errors import ClientError
from corral.models.tool_calls import ToolCall, parse_tool_calls
from corral.scheduler.events import Done, DoneReason, Failed, Text, ToolCalls

WEATHER = {"name": "get_weather", "description": "Current weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

HELLO = [{"role": "user", "content": "Name three colors."}]
# This SDK no longer has parameters for temperature, top_p, top_k (the API still takes them, and
# Ollama reads them): they go in the body as the SDK's extra_body.
GREEDY = {"temperature": 0}

CONVERSATION = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_abc12345", "name": "get_weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_abc12345",
         "content": [{"type": "text", "text": "18 degrees and sunny"}]},
        {"type": "text", "text": "Answer in one sentence."}]},
]

# The same conversation as Ollama's anthropic.FromMessagesRequest hands it to the chat handler.
CONVERSATION_AS_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "Let me look.",
     "tool_calls": [{"id": "call_abc12345", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18 degrees and sunny", "tool_call_id": "call_abc12345"},
    {"role": "user", "content": "Answer in one sentence."},
]


# -- conversion (no server) ----------------------------------------------------------------------

def test_request_becomes_ollamas_chat():
    req = MessagesRequest.model_validate({
        "model": SMOL, "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "top_k": 7, "stop_sequences": ["\n\n"],
        "system": [{"type": "text", "text": "Be ", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "brief."}],
        "messages": CONVERSATION, "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "u1"}})
    req.check()
    assert req.chat_messages() == CONVERSATION_AS_CHAT
    # input_schema is the function's parameters; the server-side web_search tool is not offered.
    assert req.chat_tools() == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER["input_schema"]}}]
    opts = req.options()
    assert (opts.num_predict, opts.temperature, opts.top_p, opts.top_k, opts.stop) == (50, 0.2, 0.9, 7, ["\n\n"])
    # Ollama's estimate for message_start: a quarter of the characters (here well over 10 tokens).
    assert 20 < req.estimated_input_tokens() < 200
    plain = MessagesRequest.model_validate({"model": SMOL, "max_tokens": 1,
                                            "messages": [{"role": "user", "content": "Hello, world!"}]})
    assert plain.estimated_input_tokens() == (4 + 13) // 4  # Ollama's len/4 of "user" + the text


def test_tool_result_order_and_images():
    """A user turn's tool results come before its text; an assistant turn's after (Ollama's order)."""
    png = "iVBORw0KGgo="
    turn = MessagesRequest.model_validate({"model": SMOL, "max_tokens": 1, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "a"}, {"type": "image", "source": {"type": "base64", "data": png}},
                {"type": "text", "text": "b"}]},
            {"type": "tool_result", "tool_use_id": "t2"}]}]}).chat_messages()
    assert turn == [{"role": "tool", "content": "ab", "tool_call_id": "t1", "images": [png]},
                    {"role": "tool", "content": "", "tool_call_id": "t2"},
                    {"role": "user", "content": "look"}]
    # A turn with nothing to say (empty text, unknown blocks) is no message, as in Ollama.
    empty = MessagesRequest.model_validate({"model": SMOL, "max_tokens": 1, "messages": [
        {"role": "user", "content": ""}, {"role": "assistant", "content": [{"type": "document"}]},
        {"role": "user", "content": "hi"}]}).chat_messages()
    assert empty == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("messages", "error"), [
    ([{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}],
     "tool_use block missing required 'id' field"),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": "x", "input": {}}]}],
     "tool_use block missing required 'name' field"),
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}],
     "invalid image source type: url. Only base64 images are supported."),
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "@@@"}}]}],
     "invalid base64 image data"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                     "content": [{"type": "image", "source": "x"}]}]}],
     "invalid tool_result image source"),
    ([{"role": "robot", "content": "hi"}], "invalid message role 'robot'"),
])
def test_conversion_errors(messages, error):
    req = MessagesRequest.model_validate({"model": SMOL, "max_tokens": 5, "messages": messages})
    with pytest.raises(ClientError, match=error.replace(".", r"\.")):
        req.chat_messages()


def _parsed_calls() -> tuple[str, list[ToolCall]]:
    """Real parser output for a Hermes-style reply with text and two calls."""
    text = ('Checking both.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>')
    content, calls = parse_tool_calls(text, {"get_weather"})
    assert content == "Checking both." and len(calls) == 2
    return content, calls


def _sdk_over(body: bytes, content_type: str) -> anthropic.Anthropic:
    """The real SDK, reading `body` as the server's reply."""
    reply = lambda _: httpx2.Response(200, content=body, headers={"content-type": content_type})
    return anthropic.Anthropic(base_url="http://corral.test", api_key="x",
                               http_client=httpx2.Client(transport=httpx2.MockTransport(reply)))


def test_tool_use_reply_non_streaming():
    content, calls = _parsed_calls()
    done = Done(DoneReason.STOP, prompt_eval_count=40, eval_count=30, tool_calls=True)
    reply = message_response("msg_1", SMOL, Collected(text=content, calls=calls, done=done))
    message = _sdk_over(json.dumps(reply).encode(), "application/json").messages.create(
        model=SMOL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Checking both."
    assert [b.input for b in message.content[1:]] == [{"city": "Paris"}, {"city": "Oslo"}]
    ids = [b.id for b in message.content[1:]]
    assert all(i.startswith("call_") and len(i) == 13 for i in ids) and len(set(ids)) == 2  # Ollama's toolCallId
    assert message.stop_reason == "tool_use" and (message.usage.input_tokens, message.usage.output_tokens) == (40, 30)


def test_tool_use_reply_streaming():
    content, calls = _parsed_calls()
    stream = MessageStream("msg_2", SMOL, 9)
    events = [e for ev in (Text(content), ToolCalls(calls), Done(DoneReason.STOP, 40, 0, 30, 0, tool_calls=True))
              for e in stream.feed(ev)]
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None), ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None)]
    assert events[4][1]["content_block"]["input"] == {}  # the input arrives as one input_json_delta
    body = b"".join(sse(name, data) for name, data in events)
    with _sdk_over(body, "text/event-stream").messages.stream(
            model=SMOL, max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        message = s.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert [b.input for b in message.content[1:]] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert message.stop_reason == "tool_use" and (message.usage.input_tokens, message.usage.output_tokens) == (40, 30)


def test_failure_mid_stream_is_an_error_event():
    stream = MessageStream("msg_3", SMOL, 1)
    events = [e for ev in (Text("Hel"), Failed(500, "runner crashed")) for e in stream.feed(ev)]
    assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert events[-1][1]["error"] == {"type": "api_error", "message": "runner crashed"}
    body = b"".join(sse(name, data) for name, data in events)
    with pytest.raises(anthropic.APIStatusError, match="runner crashed"), _sdk_over(
            body, "text/event-stream").messages.stream(model=SMOL, max_tokens=10, messages=HELLO) as s:
        s.get_final_message()


# -- live, with the official client ---------------------------------------------------------------

@pytest.fixture(scope="module")
def client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x")




@pytest.mark.parametrize("model", MODELS)  # gemma3:270m has no chat template: the fallback transcript
def test_message(client, model):
    m = client.messages.create(model=model, max_tokens=40, extra_body=GREEDY, messages=HELLO)
    assert m.type == "message" and m.role == "assistant" and m.model == model and m.id.startswith("msg_")
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 40


def test_stream_matches_non_stream(client):
    kw = dict(model=SMOL, max_tokens=24, extra_body=GREEDY, system="Be brief.", messages=HELLO)
    whole = client.messages.create(**kw)
    with client.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (whole.usage.input_tokens,
                                                                     whole.usage.output_tokens)


def test_max_tokens(client):
    m = client.messages.create(model=SMOL, max_tokens=3, extra_body=GREEDY, messages=HELLO)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3


def test_stop_sequences(client):
    base = client.messages.create(model=SMOL, max_tokens=30, extra_body=GREEDY, messages=HELLO).content[0].text
    stop = base[6:9]
    m = client.messages.create(model=SMOL, max_tokens=30, extra_body=GREEDY, messages=HELLO, stop_sequences=[stop])
    assert m.content[0].text == base[:base.index(stop)]
    # Ollama's done_reason is "stop" for a stop string as for the end token: end_turn (mapStopReason).
    assert m.stop_reason == "end_turn"


def test_same_reply_as_api_chat(server, client):
    """System blocks, text blocks and options reach the model as /api/chat's request would."""
    m = client.messages.create(model=SMOL, max_tokens=20, extra_body={**GREEDY, "top_k": 5},
                               system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                               messages=[{"role": "user", "content": [{"type": "text", "text": "Name three "},
                                                                      {"type": "text", "text": "colors."}]}])
    r = ollama.Client(host=server.url).chat(model=SMOL, messages=[{"role": "system", "content": "Be brief."}, *HELLO],
                                            options={"temperature": 0, "top_k": 5, "num_predict": 20})
    assert m.content[0].text == r.message.content
    assert (m.usage.input_tokens, m.usage.output_tokens) == (r.prompt_eval_count, r.eval_count)


def test_tools_request(client, tool_model):
    kw = dict(model=tool_model, max_tokens=40, extra_body=GREEDY, tools=[WEATHER], tool_choice={"type": "auto"},
              messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    m = client.messages.create(**kw)
    assert m.content and {b.type for b in m.content} <= {"text", "tool_use"}
    called = any(b.type == "tool_use" for b in m.content)
    assert m.stop_reason == "tool_use" if called else m.stop_reason in ("end_turn", "max_tokens")
    with client.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    assert [b.model_dump(exclude={"id"}) for b in final.content] == [b.model_dump(exclude={"id"}) for b in m.content]
    assert final.stop_reason == m.stop_reason and final.usage.output_tokens == m.usage.output_tokens
    # A model whose template has no tools: Ollama's chat handler's 400, in Anthropic's shape.
    with pytest.raises(anthropic.BadRequestError, match="does not support tools"):
        client.messages.create(**{**kw, "model": SMOL})


def test_tool_result_turn_renders_as_ollamas_chat(server, client, tool_model):
    m = client.messages.create(model=tool_model, max_tokens=24, extra_body=GREEDY, system="Be brief.",
                               tools=[WEATHER], messages=CONVERSATION)
    r = ollama.Client(host=server.url).chat(
        model=tool_model, messages=CONVERSATION_AS_CHAT, options={"temperature": 0, "num_predict": 24},
        tools=[{"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                                 "parameters": WEATHER["input_schema"]}}])
    assert m.content and m.content[0].type == "text" and m.content[0].text == r.message.content
    # The same prompt, token for token: the call and its result were rendered into it.
    assert m.usage.input_tokens == r.prompt_eval_count
    without = client.messages.create(model=tool_model, max_tokens=1, system="Be brief.", tools=[WEATHER],
                                     messages=CONVERSATION[:1])
    assert m.usage.input_tokens > without.usage.input_tokens + 20


def test_thinking_is_relaxed_for_a_model_that_cannot_think(client):
    """Ollama sets relax_thinking for /v1/messages: no 400, the reply has no thinking block."""
    m = client.messages.create(model=SMOL, max_tokens=8, extra_body=GREEDY, messages=HELLO,
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in m.content] == ["text"]


def test_sse_event_order(server):
    body = {"model": SMOL, "max_tokens": 12, "temperature": 0, "stream": True, "messages": HELLO}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = []
    for chunk in raw.strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    names = [n for n, _ in events]
    deltas = names.count("content_block_delta")
    assert names == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"] and deltas >= 1
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["usage"]["output_tokens"] == 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")
    final = events[-2][1]
    whole = httpx.post(server.url + "/v1/messages", json={**body, "stream": False}, timeout=120).json()
    assert final["delta"]["stop_reason"] == whole["stop_reason"] in ("end_turn", "max_tokens")
    assert final["usage"] == whole["usage"] and 0 < final["usage"]["output_tokens"] <= 12
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == whole["content"][0]["text"]


def _post(server, body: dict | str, path: str = "/v1/messages") -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"model": SMOL, "messages": HELLO}, 400, "max_tokens is required and must be positive"),
    ({"model": SMOL, "max_tokens": 0, "messages": HELLO}, 400, "max_tokens is required and must be positive"),
    ({"max_tokens": 5, "messages": HELLO}, 400, "model is required"),
    ({"model": SMOL, "max_tokens": 5}, 400, "messages is required"),
    ({"model": SMOL, "max_tokens": 5, "messages": []}, 400, "messages is required"),
    ({"model": SMOL, "max_tokens": 5.5, "messages": HELLO}, 400, "max_tokens"),
    ({"model": SMOL, "max_tokens": 5, "messages": HELLO, "temperature": -1}, 400, "temperature"),
    ({"model": SMOL, "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, 400, "messages.0.content"),
    ({"model": SMOL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}, 400, "type"),
    ({"model": SMOL, "max_tokens": 5, "messages": HELLO, "tools": [{"name": "f", "input_schema": "x"}]}, 400,
     "input_schema"),
    ({"model": SMOL, "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}, 400,
     "tool_use block missing required 'id' field"),
    ({"model": "nosuch:1", "max_tokens": 5, "messages": HELLO}, 404, "nosuch"),
    ({"model": "nosuch:1", "max_tokens": 5, "messages": HELLO, "stream": True}, 404, "nosuch"),
    ('{"model": ', 400, "invalid JSON body"),
])
def test_bad_requests_are_anthropic_errors(server, body, status, message):
    r = _post(server, body)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    error = r.json()
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert error["type"] == "error" and error["error"]["type"] == kind and message in error["error"]["message"]
    assert error["request_id"].startswith("req_")


def test_sdk_raises_the_right_errors(server, client):
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="nosuch:1", max_tokens=5, messages=HELLO)
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=SMOL, max_tokens=5, messages=HELLO, extra_body={"top_p": 2})
    # Not served by Ollama either (its docs: count_tokens is not supported): a 404 in Anthropic's shape.
    r = _post(server, {"model": SMOL, "messages": HELLO}, "/v1/messages/count_tokens")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_api_key_as_the_sdk_sends_it(start_server):
    """With CORRAL_API_KEY, the SDK's api_key (x-api-key) and auth_token (Bearer) both pass."""
    server = start_server(CORRAL_API_KEY="s3cret")
    kw = dict(model=SMOL, max_tokens=2, messages=HELLO)
    assert anthropic.Anthropic(base_url=server.url, api_key="s3cret").messages.create(**kw).content
    assert anthropic.Anthropic(base_url=server.url, auth_token="s3cret").messages.create(**kw).content
    with pytest.raises(anthropic.AuthenticationError) as err:
        anthropic.Anthropic(base_url=server.url, api_key="wrong").messages.create(**kw)
    assert err.value.body["error"]["type"] == "authentication_error"
