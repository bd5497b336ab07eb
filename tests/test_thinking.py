"""Thinking: the request's `think`, capability refusals with Ollama's texts, the tags a template
shows, the incremental splitter, and the real engine's output split into `thinking` on all APIs.

Neither test model thinks, so the live tests create one from SmolLM2 with a Go TEMPLATE that
renders an assistant's .Thinking in <think></think> inside the range over .Messages (so Ollama's
InferTags finds the tags) and ends the prompt with "<think>" when the request thinks, and a
MESSAGE few-shot whose answers carry their thinking. At temperature 0 SmolLM2 then writes
"The user wants a hello.</think>\nHello.": what is asserted is corral's split of it.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest
from conftest import GEMMA, SMOL

from corral.errors import ClientError
from corral.models.capabilities import Capability, Unsupported, check_request
from corral.models.output_parser import Content, OutputFormat, OutputParser, Reasoning, TemplateTags
from corral.models.template import go_template_tree, render_chat
from corral.models.thinking import ThinkingParser, infer_tags, parse_think, think_from_effort

# ---- units


def _feed(parser: ThinkingParser, chunks: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    steps = [parser.add(c) for c in chunks] + [parser.flush()]
    return "".join(t for t, _ in steps), "".join(c for _, c in steps), steps


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_thinking_parser_any_chunking(size):
    text = "  <think>\n  Let me see: 2+2.\n</think>\n\nIt is 4."
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    thinking, content, _ = _feed(ThinkingParser("<think>", "</think>"), chunks)
    assert (thinking, content) == ("Let me see: 2+2.\n", "It is 4.")


def test_thinking_parser_streams_early_and_keeps_back_only_a_tag_prefix():
    parser = ThinkingParser("<think>", "</think>")
    assert parser.add("<thi") == ("", "")  # could still be the tag
    assert parser.add("nk>abc") == ("abc", "")  # sent at once
    assert parser.add("def</th") == ("def", "")  # "</th" kept back
    assert parser.add("inking") == ("</thinking", "")  # was not the tag after all
    assert parser.add("</think>  x") == ("", "x")
    assert parser.add(" y") == ("", " y")


def test_thinking_parser_without_tags_is_all_content_whitespace_kept():
    thinking, content, steps = _feed(ThinkingParser("<think>", "</think>"), ["  Hello", " world"])
    assert (thinking, content) == ("", "  Hello world")
    assert steps[0] == ("", "  Hello")  # no holding back once it is plain text


def test_thinking_parser_prompt_ending_in_the_opening_tag():
    parser = OutputParser(OutputFormat(TemplateTags("<think>", "</think>"), thinking=True,
                                       prompt="<|im_start|>assistant\n<think>\n"))
    assert parser.add("reasoning</think>answer") == [Reasoning("reasoning"), Content("answer")]
    off = OutputParser(OutputFormat(TemplateTags("<think>", "</think>"), thinking=False,
                                    prompt="x<think>"))
    assert off.idle


def test_thinking_parser_cut_off_inside_thinking_flushes_as_thinking():
    thinking, content, _ = _feed(ThinkingParser("<think>", "</think>"), ["<think>half a thought</thi"])
    assert (thinking, content) == ("half a thought</thi", "")


GO_THINKING = """{{- range $i, $m := .Messages }}<|im_start|>{{ .Role }}
{{ if and (eq .Role "assistant") .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>
{{ end }}"""


def test_infer_tags_as_ollama():
    assert infer_tags(go_template_tree(GO_THINKING)) == ("<think>", "</think>")
    # .Thinking outside a range over .Messages: no tags
    assert infer_tags(go_template_tree("{{ .Thinking }}<think>{{ .Prompt }}</think>")) == ("", "")
    qwen3 = ('{{- range $i, $_ := .Messages }}{{- if eq .Role "assistant" }}<|im_start|>assistant\n'
             '{{ if .Thinking }}<think>{{ .Thinking }}</think>\n{{ end }}{{ .Content }}{{ end }}{{ end }}')
    assert infer_tags(go_template_tree(qwen3)) == ("<think>", "</think>")
    assert TemplateTags.of(None, "{% if x %}<think>{% endif %}</think>").think_open == "<think>"
    assert TemplateTags.of(None, "{{ messages }}").think_open == ""


def test_think_values_and_reasoning_effort():
    assert [parse_think(v) for v in (None, True, False, "low", "max")] == [None, True, False, "low", "max"]
    with pytest.raises(ClientError, match=r'invalid think value: "extreme"'):
        parse_think("extreme")
    with pytest.raises(ClientError, match="think must be a boolean or string"):
        parse_think(3)
    assert [think_from_effort(e) for e in (None, "", "none", "minimal", "low", "high", "xhigh", "ultra")] == \
        [None, None, False, "low", "low", "high", "max", "max"]
    with pytest.raises(ClientError, match="invalid reasoning value"):
        think_from_effort("lots")


def test_check_request_texts_as_ollama():
    smol = [Capability.COMPLETION]
    common = {"model": "smollm2:135m", "full_name": "registry.ollama.ai/library/smollm2:135m"}
    with pytest.raises(Unsupported, match='^"smollm2:135m" does not support thinking$'):
        check_request(smol, endpoint="chat", think="high", **common)
    assert check_request(smol, endpoint="chat", think=False, **common) is False
    with pytest.raises(Unsupported, match="^registry.ollama.ai/library/smollm2:135m does not support insert$"):
        check_request(smol, endpoint="generate", think=None, want=[Capability.INSERT], **common)
    with pytest.raises(Unsupported) as both:
        check_request(smol, endpoint="chat", think=None, want=[Capability.TOOLS, Capability.VISION], **common)
    assert str(both.value) == "registry.ollama.ai/library/smollm2:135m does not support tools\nvision"
    with pytest.raises(Unsupported, match='^"bert" does not support chat$'):
        check_request([Capability.EMBEDDING], endpoint="chat", think=None, model="bert", full_name="x")
    # a thinking model thinks unless told not to
    thinker = [Capability.COMPLETION, Capability.THINKING]
    assert check_request(thinker, endpoint="chat", think=None, **common) is True
    assert check_request(thinker, endpoint="chat", think=False, **common) is False


def test_jinja_templates_see_think_as_llama_cpp_kwargs():
    template = "{{ enable_thinking }}|{{ reasoning_effort }}|{{ messages[0].name }}"
    messages = [{"role": "tool", "content": "18C", "tool_name": "get_weather"}]
    assert render_chat(template, messages, think="low").text == "True|low|get_weather"
    assert render_chat(template, messages, think=False).text == "False||get_weather"


# ---- live: a created model that thinks

# .Think puts the opening tag at the end of the prompt: the output starts inside thinking.
THINK_TEMPLATE = """{{- range $i, $m := .Messages }}<|im_start|>{{ .Role }}
{{ if and (eq .Role "assistant") .Thinking }}<think>{{ .Thinking }}</think>
{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if .Think }}<think>{{ end }}"""

FEW_SHOT = [
    {"role": "user", "content": "Say hi."},
    {"role": "assistant", "content": "Hi.", "thinking": "The user wants a greeting."},
    {"role": "user", "content": "Say bye."},
    {"role": "assistant", "content": "Bye.", "thinking": "The user wants a farewell."},
]
ASK = [{"role": "user", "content": "Say hello."}]
GREEDY = {"temperature": 0, "num_predict": 40}


@pytest.fixture(scope="module")
def thinker(server):
    client = ollama.Client(host=server.url)
    client.create(model="corral-thinker:1", from_=SMOL, template=THINK_TEMPLATE, messages=FEW_SHOT)
    yield "corral-thinker:1"
    client.delete("corral-thinker:1")


def test_created_model_thinks_and_is_shown_so(server, thinker):
    show = ollama.Client(host=server.url).show(thinker)
    assert "thinking" in show.capabilities


def test_chat_thinking_split_out(server, thinker):
    with server.client() as c:
        r = c.post("/api/chat", json={"model": thinker, "messages": ASK, "stream": False, "options": GREEDY})
        assert r.status_code == 200, r.text
        message = r.json()["message"]
        assert message["thinking"].strip() and "<think>" not in message["thinking"]
        assert "</think>" not in message["thinking"] + message["content"]
        # think: false: the template leaves the tag out, and nothing is split
        off = c.post("/api/chat", json={"model": thinker, "messages": ASK, "stream": False, "think": False,
                                        "options": GREEDY}).json()["message"]
        assert "thinking" not in off and off["content"]
        # streaming: thinking chunks first, then content chunks; the same text as non-streaming
        lines = []
        with c.stream("POST", "/api/chat", json={"model": thinker, "messages": ASK, "options": GREEDY}) as s:
            lines = [json.loads(line) for line in s.iter_lines() if line]
    thinking = [x["message"].get("thinking", "") for x in lines]
    content = [x["message"]["content"] for x in lines]
    assert "".join(thinking) == message["thinking"] and "".join(content) == message["content"]
    last_thinking = max(i for i, t in enumerate(thinking) if t)
    first_content = min(i for i, t in enumerate(content) if t)
    assert sum(1 for t in thinking if t) > 1 and last_thinking < first_content


def test_generate_thinking_split_out(server, thinker):
    with server.client() as c:
        r = c.post("/api/generate", json={"model": thinker, "prompt": "Say hello.", "stream": False,
                                          "options": GREEDY})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["thinking"].strip() and "</think>" not in body["response"]


def test_ollama_client_think(server, thinker):
    client = ollama.Client(host=server.url)
    r = client.chat(model=thinker, messages=ASK, think=True, options=GREEDY)
    assert r.message.thinking and r.message.content
    streamed = list(client.chat(model=thinker, messages=ASK, think="high", options=GREEDY, stream=True))
    assert "".join(c.message.thinking or "" for c in streamed) == r.message.thinking


def test_openai_reasoning(server, thinker):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = client.chat.completions.create(model=thinker, messages=ASK, temperature=0, max_tokens=40)
    message = r.choices[0].message
    assert message.reasoning and message.content
    chunks = list(client.chat.completions.create(model=thinker, messages=ASK, temperature=0, max_tokens=40,
                                                 stream=True))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    assert reasoning == message.reasoning
    off = client.chat.completions.create(model=thinker, messages=ASK, temperature=0, max_tokens=40,
                                         reasoning_effort="none")
    assert not getattr(off.choices[0].message, "reasoning", None)
    with pytest.raises(openai.BadRequestError, match="invalid reasoning value"):
        client.chat.completions.create(model=thinker, messages=ASK, extra_body={"reasoning_effort": "lots"})


# ---- live: what models cannot do is refused with Ollama's texts

def test_capability_refusals(server):
    with server.client() as c:
        def error(path: str, body: dict) -> tuple[int, str]:
            r = c.post(path, json={"stream": False, **body})
            return r.status_code, r.json()["error"]

        chat = {"model": SMOL, "messages": ASK}
        assert error("/api/chat", {**chat, "think": True}) == (400, '"smollm2:135m" does not support thinking')
        assert error("/api/generate", {"model": SMOL, "prompt": "x", "think": "low"}) == \
            (400, '"smollm2:135m" does not support thinking')
        assert error("/api/chat", {**chat, "think": "extreme"})[0] == 400
        assert error("/api/generate", {"model": SMOL, "prompt": "def f(", "suffix": "return 1"}) == \
            (400, "registry.ollama.ai/library/smollm2:135m does not support insert")
        image = "iVBORw0KGgo="
        assert error("/api/generate", {"model": SMOL, "prompt": "what is this", "images": [image]}) == \
            (400, "registry.ollama.ai/library/smollm2:135m does not support vision")
        assert error("/api/chat", {"model": SMOL, "messages": [{**ASK[0], "images": [image]}]}) == \
            (400, "registry.ollama.ai/library/smollm2:135m does not support vision")
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        assert error("/api/chat", {"model": GEMMA, "messages": ASK, "tools": [tool]}) == \
            (400, "registry.ollama.ai/library/gemma3:270m does not support tools")
        # think false on a model that cannot think is no error (as Ollama)
        ok = c.post("/api/chat", json={**chat, "think": False, "stream": False, "options": {"num_predict": 2}})
        assert ok.status_code == 200 and "thinking" not in ok.json()["message"]
        # the OpenAI layer refuses the same, in its error shape
        r = c.post("/v1/chat/completions", json={**chat, "reasoning_effort": "high"})
        assert r.status_code == 400 and r.json()["error"]["message"] == '"smollm2:135m" does not support thinking'
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).chat(model=SMOL, messages=ASK, think=True)
    assert refused.value.status_code == 400 and "does not support thinking" in refused.value.error


def test_think_and_capability_checks_come_before_a_load(server):
    """As Ollama: the checks run for a load request too (an empty chat), but not for an unload."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/chat", json={"model": SMOL, "messages": [], "think": True})
        assert r.status_code == 400
        r = c.post("/api/chat", json={"model": SMOL, "messages": [], "think": True, "keep_alive": 0})
        assert r.status_code == 200 and r.json()["done_reason"] == "unload"
