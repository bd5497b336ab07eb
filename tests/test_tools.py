"""Tool calling: tools rendered into a tool-aware chat template, calls parsed back out as they
stream (every family's format, any chunking), with ids and indexes, on both APIs.

Neither test model's own template knows tools (a `tools` request to either is refused, as
Ollama refuses it), so the live tests create models from SmolLM2 with a Hermes-style template:
one constrained by `format` so a 135M model answers with a call, and one with a MESSAGE few-shot
of three weather calls, after which SmolLM2 at temperature 0 honestly writes
`<tool_call>{...}</tool_call>` for a weather question and plain text for anything else.
"""

from __future__ import annotations

import json
import re

import ollama
import openai
import pytest
from conftest import SMOL

from corral.models.template import go_template_tree
from corral.models.tool_calls import ToolCall, ToolCallParser, go_tool_tag, jinja_tool_tag, parse_tool_calls

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


NAMES = {"get_weather", "add"}
PARIS = ("get_weather", {"city": "Paris"})
FORMATS = {
    "hermes": ('Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
               "Sure. ", [PARIS]),
    "hermes-two": ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
                   '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
                   "", [PARIS, ("add", {"a": 1, "b": 2})]),
    "llama3-bare": ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    "llama3-python-tag": ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', "", [PARIS]),
    "mistral-list": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                     '{"name": "add", "arguments": {"a": 1}}]', "", [PARIS, ("add", {"a": 1})]),
    "mistral-args": ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]add[ARGS]{"a": 1}', "",
                     [PARIS, ("add", {"a": 1})]),
    "mistral-call-id": ('[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris"}', "", [PARIS]),
    "openai-shape": ('[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]',
                     "", [PARIS]),
    "text-after": ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\nDone.',
                   "Done.", [PARIS]),
    "braces-in-strings": ('<tool_call>{"name": "add", "arguments": {"a": "}{\\"x"}}</tool_call>', "",
                          [("add", {"a": '}{"x'})]),
    "no-call": ("The weather is {probably} nice [1].", "The weather is {probably} nice [1].", []),
    "unknown-tool": ('{"name": "other", "arguments": {}}', '{"name": "other", "arguments": {}}', []),
    "malformed": ('<tool_call>{"name": get_weather}</tool_call> ok', '<tool_call>{"name": get_weather}</tool_call> ok',
                  []),
    "cut-off": ('<tool_call>{"name": "get_weather", "arguments": {"ci', '<tool_call>{"name": "get_weather", "arguments": {"ci',
                []),
    "tag-in-prose": ("Use [TOOL_CALLS] to call.", "Use [TOOL_CALLS] to call.", []),
}


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_tool_call_formats_any_chunking(name, size):
    text, content, calls = FORMATS[name]
    parser = ToolCallParser(NAMES)
    pieces = [p for i in range(0, len(text), size) for p in parser.add(text[i:i + size])] + parser.flush()
    assert "".join(p for p in pieces if isinstance(p, str)) == content
    got = [p for p in pieces if isinstance(p, ToolCall)]
    assert [(c.name, c.arguments) for c in got] == calls
    assert [c.index for c in got] == list(range(len(calls)))
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", c.id) for c in got) and len({c.id for c in got}) == len(got)
    assert parser.called == bool(calls)


def test_text_is_streamed_at_once_when_no_call_comes():
    parser = ToolCallParser(NAMES, "<tool_call>")
    assert parser.add("Hello") == ["Hello"]  # nothing held back
    assert parser.add(" there <tool") == [" there "]  # only what may be the tag waits
    assert parser.add("kit>") == ["<toolkit>"]
    assert parser.add("{not a call at the start}") == ["{not a call at the start}"]
    # a bare JSON call counts only at the very start of the output
    assert parse_tool_calls('Hi {"name": "add", "arguments": {}}', NAMES)[1] == []


def test_call_waits_only_until_it_is_complete():
    parser = ToolCallParser(NAMES, "<tool_call>")
    assert parser.add('<tool_call>{"name": "add", "arguments": {"a"') == []
    (call,) = parser.add(": 1}}")  # sent as soon as its JSON closes, before </tool_call>
    assert isinstance(call, ToolCall) and call.arguments == {"a": 1}
    assert parser.add("</tool_call>") == [] and parser.flush() == []


def test_tool_tag_from_templates_as_ollama():
    hermes = ('{{- range .Messages }}{{ if .ToolCalls }}<tool_call>\n{{ range .ToolCalls }}'
              '{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}</tool_call>'
              '{{ end }}{{ end }}')
    llama3 = ('{{- range .Messages }}{{- if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", '
              '"parameters": {{ .Function.Arguments }}}{{ end }}{{ end }}{{ end }}')
    mistral = ('{{- range .Messages }}{{- if .ToolCalls }}[TOOL_CALLS][{{ range .ToolCalls }}'
               '{"name": "{{ .Function.Name }}"}{{ end }}]{{ end }}{{ end }}')
    assert [go_tool_tag(go_template_tree(t)) for t in (hermes, llama3, mistral, "{{ .Prompt }}")] == \
        ["<tool_call>", "{", "[TOOL_CALLS][", "{"]
    assert jinja_tool_tag(TEMPLATE) == "<tool_call>" and jinja_tool_tag(None) == "{"
    # the template's own tag is recognised even when it is no known family's
    assert parse_tool_calls('<<CALL>>{"name": "add", "arguments": {}}', NAMES, "<<CALL>>")[1][0].name == "add"


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


# ---- live: a model that honestly calls (a few-shot of three weather calls)

def _shot(city: str, degrees: int) -> list[dict]:
    return [{"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": city}}}]},
            {"role": "tool", "content": f"{degrees} degrees", "tool_name": "get_weather"},
            {"role": "assistant", "content": f"It is {degrees} degrees in {city}."}]


@pytest.fixture(scope="module")
def server(start_server):
    """4 slots, and every token its own chunk (stream interval 0): the streaming test below counts
    chunks to show the parser holds nothing back."""
    return start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_STREAM_INTERVAL="0")


@pytest.fixture(scope="module")
def few_shot_model(server):
    client = ollama.Client(host=server.url)
    client.create(model="corral-toolshot:1", from_=SMOL, template=TEMPLATE,
                  messages=_shot("Rome", 20) + _shot("Oslo", 5) + _shot("Cairo", 30))
    yield "corral-toolshot:1"
    client.delete("corral-toolshot:1")


def get_weather(city: str) -> str:
    """Current weather for a city

    Args:
      city: the city
    """
    return "18 degrees"


GREEDY = {"temperature": 0, "num_predict": 60}


def test_ollama_client_python_function_tool(server, few_shot_model):
    client = ollama.Client(host=server.url)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat(model=few_shot_model, messages=ask, tools=[get_weather], options=GREEDY)
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert r.done_reason == "stop"
    # streamed: the call arrives in its own chunk with Ollama's id and index, before the last one
    with server.client() as c, c.stream("POST", "/api/chat", json={
            "model": few_shot_model, "messages": ask, "tools": [WEATHER], "options": GREEDY}) as s:
        chunks = [json.loads(line) for line in s.iter_lines() if line]
    (with_calls,) = [x for x in chunks if x["message"].get("tool_calls")]
    (streamed,) = with_calls["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", streamed["id"])
    assert streamed["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert not with_calls["done"] and chunks[-1]["done"]


def test_text_streams_early_when_no_call_is_made(server, few_shot_model):
    """With tools offered, a reply that is no call streams as it comes (nothing is held back to
    the end, as the old splitter did): token by token with the stream interval off."""
    body = {"model": few_shot_model, "messages": [{"role": "user", "content": "Tell me a joke."}],
            "tools": [WEATHER], "options": {"temperature": 0, "num_predict": 30}}
    with server.client() as c, c.stream("POST", "/api/chat", json=body) as s:
        chunks = [json.loads(line) for line in s.iter_lines() if line]
    texts = [x["message"]["content"] for x in chunks if not x["done"] and x["message"]["content"]]
    assert len(texts) >= 10, texts  # about one a token (the server runs with CORRAL_STREAM_INTERVAL=0)
    assert not any(x["message"].get("tool_calls") for x in chunks)
    with server.client() as c:
        whole = c.post("/api/chat", json={**body, "stream": False}).json()["message"]
    assert "".join(texts) == whole["content"] and "tool_calls" not in whole


GO_TOOLS = """{{- if .Tools }}<|im_start|>system
Tools: {{ .Tools }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ if eq .Role "tool" }}<tool_response name="{{ .ToolName }}" id="{{ .ToolCallID }}">{{ .Content }}</tool_response>
{{- else if .ToolCalls }}{{ range .ToolCalls }}<tool_call>{"id": "{{ .ID }}", "name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}</tool_call>{{ end }}
{{- else }}{{ .Content }}{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def test_tool_round_trip_renders_tool_name_and_call_id(server):
    """A tool result's tool_name and tool_call_id reach the Go template (.ToolName, .ToolCallID), and
    the OpenAI layer fills in the name from the call its tool_call_id answers: both APIs then
    render the same prompt (the same prompt token count), longer than one without them."""
    client = ollama.Client(host=server.url)
    client.create(model="corral-gotools:1", from_=SMOL, template=GO_TOOLS)
    try:
        assert "tools" in client.show("corral-gotools:1").capabilities
        call = {"id": "call_abc12345", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        turns = [{"role": "user", "content": "Weather in Paris?"},
                 {"role": "assistant", "content": "", "tool_calls": [call]}]
        result = {"role": "tool", "content": "18 degrees", "tool_name": "get_weather", "tool_call_id": call["id"]}
        options = {"temperature": 0, "num_predict": 1}

        def prompt_tokens(messages: list[dict]) -> int:
            with server.client() as c:
                r = c.post("/api/chat", json={"model": "corral-gotools:1", "messages": messages, "stream": False,
                                              "tools": [WEATHER], "options": options})
                assert r.status_code == 200, r.text
                return r.json()["prompt_eval_count"]

        full = prompt_tokens(turns + [result])
        bare = prompt_tokens(turns + [{"role": "tool", "content": "18 degrees"}])
        assert full > bare
        oa = openai.OpenAI(base_url=server.url + "/v1", api_key="unused").chat.completions.create(
            model="corral-gotools:1", temperature=0, max_tokens=1, tools=[WEATHER], messages=[
                turns[0], {"role": "assistant", "content": "", "tool_calls": [
                    {"id": call["id"], "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "content": "18 degrees", "tool_call_id": call["id"]}])
        assert oa.usage is not None and oa.usage.prompt_tokens == full
    finally:
        client.delete("corral-gotools:1")


def test_tools_refused_on_a_model_whose_template_has_none(server):
    with server.client() as c:
        r = c.post("/api/chat", json={"model": SMOL, "messages": [{"role": "user", "content": "hi"}],
                                      "tools": [WEATHER], "stream": False})
        assert (r.status_code, r.json()) == (400, {"error": "registry.ollama.ai/library/smollm2:135m does not support tools"})
        r = c.post("/v1/chat/completions", json={"model": SMOL, "messages": [{"role": "user", "content": "hi"}],
                                                 "tools": [WEATHER]})
        assert r.status_code == 400 and r.json()["error"]["message"].endswith("does not support tools")
        # no tools (or an empty list) is no refusal
        r = c.post("/api/chat", json={"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "tools": [],
                                      "stream": False, "options": {"num_predict": 1}})
        assert r.status_code == 200
