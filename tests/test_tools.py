"""Tool calling: tools rendered into a tool-aware chat template, calls parsed back out, both APIs.

Neither test model's own template knows tools, so the test creates one from SmolLM2 with a
Hermes-style Jinja template, and constrains the reply with `format` so that a 135M model answers
with a call; what is tested is corral's path: template rendering, parsing, the response shapes.
"""

from __future__ import annotations

import json

import ollama
import openai
import pytest
from conftest import SMOL

from corral.models.tool_calls import parse_tool_calls

TEMPLATE = """{% if tools %}<|im_start|>system
You can call these tools:
{% for t in tools %}- {{ t.function.name }}: {{ t.function.description }}
{% endfor %}Reply with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>
{% endfor %}<|im_start|>assistant
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

CALL_SCHEMA = {"type": "object", "properties": {
    "name": {"const": "get_weather"},
    "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                  "required": ["city"]}}, "required": ["name", "arguments"]}


@pytest.fixture(scope="module")
def tool_model(server):
    client = ollama.Client(host=server.url)
    client.create(model="corral-tools:1", from_=SMOL, template=TEMPLATE)
    yield "corral-tools:1"
    client.delete("corral-tools:1")


def test_parse_tool_calls_formats():
    names = {"get_weather"}
    text = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert parse_tool_calls(text, names) == ("Sure.", [{"function": {"name": "get_weather",
                                                                     "arguments": {"city": "Paris"}}}])
    assert parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Rome"}}', names)[1][0][
        "function"]["arguments"] == {"city": "Rome"}
    assert parse_tool_calls('{"name": "other", "arguments": {}}', names) == ('{"name": "other", "arguments": {}}', [])
    assert parse_tool_calls("plain text", names) == ("plain text", [])


def test_ollama_chat_tool_call_and_tool_result(server, tool_model):
    client = ollama.Client(host=server.url)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat(model=tool_model, messages=messages, tools=[WEATHER], format=CALL_SCHEMA,
                    options={"temperature": 0, "num_predict": 60})
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.arguments["city"], str)
    streamed = list(client.chat(model=tool_model, messages=messages, tools=[WEATHER], format=CALL_SCHEMA,
                                options={"temperature": 0, "num_predict": 60}, stream=True))
    first_call = next(c for c in streamed if c.message.tool_calls)
    assert first_call.message.tool_calls[0].function.name == "get_weather"
    follow = messages + [{"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
                         {"role": "tool", "content": "18 degrees and sunny"}]
    answer = client.chat(model=tool_model, messages=follow, options={"temperature": 0, "num_predict": 20})
    assert answer.message.content and not answer.message.tool_calls
    assert "tools" in client.show(tool_model).capabilities


def test_openai_tool_call(server, tool_model):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model=tool_model, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert "city" in json.loads(call.function.arguments)
    chunks = list(client.chat.completions.create(
        model=tool_model, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        temperature=0, max_tokens=60, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas and deltas[0][0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
