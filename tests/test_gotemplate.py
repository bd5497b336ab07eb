"""Go text/template as Ollama runs it (models/gotemplate, models/template.render_go*).

The acceptance suite is Ollama's own: every named template in its template/ folder against every
message sequence of template_test.go, compared with template/testdata byte for byte (vendored in
tests/data/ollama_templates, see its README). Then Ollama's other template tests, ported; then the
Go semantics, each case an output that Go's documentation and source fix.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from corral.models.gotemplate import GoTemplateError, Template
from corral.models.gotemplate.ollama import OllamaTemplate, Values, collate
from corral.models.template import TemplateError, is_go_template, render_chat, render_go, render_go_generate

DATA = Path(__file__).parent / "data" / "ollama_templates"
NAMED = sorted(p.name for p in DATA.glob("*.gotmpl"))

HELLO = {"role": "user", "content": "Hello, how are you?"}
GREAT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
SHOW = {"role": "user", "content": "I'd like to show off how chat templating works!"}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CASES = {  # template_test.go's TestTemplate: each case is named by its roles
    "user": [HELLO],
    "user-assistant-user": [HELLO, GREAT, SHOW],
    "system-user-assistant-user": [SYSTEM, HELLO, GREAT, SHOW],
}
# template_test.go drops one trailing space from these templates' output before comparing
TRAILING_SPACE = {"chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl",
                  "openchat.gotmpl", "vicuna.gotmpl"}


def test_vendored_suite_is_complete() -> None:
    assert len(NAMED) == 20
    for name in NAMED:
        assert sorted(p.name for p in (DATA / "testdata" / name).iterdir()) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", NAMED)
def test_named_template(name: str, case: str) -> None:
    tmpl = OllamaTemplate((DATA / name).read_text())
    got = tmpl.execute(Values([dict(m) for m in CASES[case]]))
    if name in TRAILING_SPACE and got.endswith(" "):
        got = got[:-1]
    assert got == (DATA / "testdata" / name / case).read_text()


@pytest.mark.parametrize("name", NAMED)
def test_named_template_parses(name: str) -> None:
    tmpl = OllamaTemplate((DATA / name).read_text())
    assert str(tmpl.trees[""]) != ""
    assert "messages" in tmpl.vars  # every named template takes the messages path


# ---- tools/testdata (Ollama at 6b04cad, see the README): all messages and tools at once

TOOLS = json.loads((DATA / "tools" / "tools.json").read_text())
TOOL_MESSAGES = json.loads((DATA / "tools" / "messages.json").read_text())
# Since Ollama v0.14 a tool's {{ .Function }} has no String method and prints as a Go struct
# (ollama/ollama#14601); these outputs were recorded before that, when it printed JSON.
FUNCTION_JSON = ('{"name":"get_current_weather","description":"Get the current weather",'
                 '"parameters":{"type":"object","required":["location","format"],"properties":')
FUNCTION_STRUCT = "{get_current_weather Get the current weather {object <nil> <nil> [location format] "


@pytest.mark.parametrize("name", sorted(p.stem for p in (DATA / "tools").glob("*.gotmpl")))
def test_tool_template(name: str) -> None:
    tmpl = OllamaTemplate((DATA / "tools" / f"{name}.gotmpl").read_text())
    got = tmpl.execute(Values(json.loads(json.dumps(TOOL_MESSAGES)), tools=TOOLS))
    want = (DATA / "tools" / f"{name}.out").read_text()
    if "{{ .Function }}" in (DATA / "tools" / f"{name}.gotmpl").read_text():
        assert FUNCTION_JSON in want
        want = want.replace(FUNCTION_JSON, FUNCTION_STRUCT)
    assert got == want


# ---- template_test.go, ported

@pytest.mark.parametrize("template, want", [
    ("{{ .Prompt }}", ["prompt", "response"]),
    ("{{ .System }} {{ .Prompt }}", ["prompt", "response", "system"]),
    ("{{ .System }} {{ .Prompt }} {{ .Response }}", ["prompt", "response", "system"]),
    ("{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
     ["prompt", "response", "system", "tools"]),
    ("{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}", ["content", "messages", "role"]),
    ('{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: {{ .ToolName }} {{ .Content }}'
     "{{ end }}{{ end }}", ["content", "messages", "role", "toolname"]),
    ("""{{- range .Messages }}
{{- if eq .Role "system" }}SYSTEM:
{{- else if eq .Role "user" }}USER:
{{- else if eq .Role "assistant" }}ASSISTANT:
{{- else if eq .Role "tool" }}TOOL:
{{- end }} {{ .Content }}
{{- end }}""", ["content", "messages", "role"]),
    ("""{{- if .Messages }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ else -}}
{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
{{- end -}}""", ["content", "messages", "prompt", "response", "role", "system"]),
])
def test_parse_vars(template: str, want: list[str]) -> None:
    assert OllamaTemplate(template).vars == want


@pytest.mark.parametrize("template, error", [
    ("{{ .Prompt ", "unclosed action"),
    ('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}', "undefined template specified"),
])
def test_parse_error(template: str, error: str) -> None:
    with pytest.raises(GoTemplateError, match=error):
        OllamaTemplate(template)


MISTRAL_NO_RESPONSE = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
MISTRAL_RESPONSE = MISTRAL_NO_RESPONSE + "{{ .Response }}"
MISTRAL_MESSAGES = """[INST] {{ if .System }}{{ .System }}

{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}
{{- end }}"""
CHATML_RESPONSE = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""
CHATML_MESSAGES = """
{{- range $index, $_ := .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
FRIEND = [{"role": "user", "content": "Hello friend!"}, {"role": "assistant", "content": "Hello human!"},
          {"role": "user", "content": "What is your name?"}]
FRIEND_SYSTEM = [{"role": "system", "content": "You are a helpful assistant!"}] + FRIEND


@pytest.mark.parametrize("templates, msgs, want", [
    ([MISTRAL_NO_RESPONSE, MISTRAL_RESPONSE, MISTRAL_MESSAGES], FRIEND,
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    ([MISTRAL_NO_RESPONSE, MISTRAL_RESPONSE, MISTRAL_MESSAGES], FRIEND_SYSTEM,
     "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    (["[INST] {{ .Prompt }}[/INST] ", "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
      '\n{{- range $i, $m := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST] '
      '{{ else if eq .Role "assistant" }}{{ .Content }}{{ end }}\n{{- end }}'],
     FRIEND + [{"role": "assistant", "content": "My name is Ollama and I"}],
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is Ollama and I"),
    ([CHATML_RESPONSE, CHATML_MESSAGES], FRIEND_SYSTEM,
     "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\nHello friend!<|im_end|>\n"
     "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n"
     "<|im_start|>assistant\n"),
])
def test_execute_with_messages(templates: list[str], msgs: list[dict], want: str) -> None:
    for template in templates:  # legacy (per turn, cut at .Response) and messages templates agree
        assert OllamaTemplate(template).execute(Values([dict(m) for m in msgs])) == want


def test_execute_with_suffix() -> None:
    tmpl = OllamaTemplate("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n"
                          "{{- else }}{{ .Prompt }}\n{{- end }}")
    assert tmpl.execute(Values([{"role": "user", "content": "hello"}])) == "hello"
    assert tmpl.execute(Values([], prompt="def add(", suffix="return x")) == "<PRE> def add( <SUF>return x <MID>"


def test_date_functions() -> None:
    tmpl = OllamaTemplate("{{- range .Messages }}{{ .Content }}{{ end }} Today is {{ currentDate }}")
    today = datetime.now().strftime("%Y-%m-%d")
    assert tmpl.execute(Values([{"role": "user", "content": "Hello"}])) == "Hello Today is " + today
    tmpl = OllamaTemplate('{{- range .Messages }}{{ end }}{{ yesterdayDate "2006" }}')
    assert tmpl.execute(Values([{"role": "user", "content": "Hello"}])) == \
        (datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d")


@pytest.mark.parametrize("msgs, want, system", [
    ([{"role": "user", "content": "Hello"}, {"role": "user", "content": "How are you?"}],
     [{"role": "user", "content": "Hello\n\nHow are you?"}], ""),
    ([{"role": "tool", "content": "sunny", "tool_name": "get_weather"},
      {"role": "tool", "content": "72F", "tool_name": "get_temperature"}],
     [{"role": "tool", "content": "sunny", "tool_name": "get_weather"},
      {"role": "tool", "content": "72F", "tool_name": "get_temperature"}], ""),
    ([{"role": "system", "content": "You are helpful"}, {"role": "user", "content": "Hello"},
      {"role": "system", "content": "Be brief"}, {"role": "system", "content": "Really"}],
     [{"role": "system", "content": "You are helpful"}, {"role": "user", "content": "Hello"},
      {"role": "system", "content": "Be brief\n\nReally"}], "You are helpful\n\nBe brief\n\nReally"),
])
def test_collate(msgs: list[dict], want: list[dict], system: str) -> None:
    assert collate(msgs) == (system, want)


def _assistant_call(arguments: dict) -> list[dict]:
    return [{"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}]}]


def test_tool_call_arguments_print_as_json_in_key_order() -> None:
    tmpl = OllamaTemplate("{{- range .Messages }}{{- range .ToolCalls }}{{ .Function.Arguments }}{{- end }}{{- end }}")
    got = tmpl.execute(Values(_assistant_call({"unit": "celsius", "location": "Tokyo", "n": 3, "x": 1e21})))
    assert got == '{"location":"Tokyo","n":3,"unit":"celsius","x":1e+21}'


def test_tool_call_arguments_range() -> None:
    tmpl = OllamaTemplate("{{- range .Messages }}{{- range .ToolCalls }}{{- range $k, $v := .Function.Arguments }}"
                          "{{ $k }}={{ $v }};{{- end }}{{- end }}{{- end }}")
    assert tmpl.execute(Values(_assistant_call({"city": "Tokyo", "days": 2}))) == "city=Tokyo;days=2;"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get current weather for a city",
    "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                   "properties": {"city": {"type": "string", "description": "City name"},
                                  "unit": {"type": ["string", "null"], "enum": ["c", "f"]}}}}}


def test_tool_properties_print_as_json_and_range() -> None:
    tmpl = OllamaTemplate("{{- range .Messages }}{{- end }}{{- range .Tools }}{{ .Function.Parameters.Properties }}|"
                          "{{- range $name, $prop := .Function.Parameters.Properties }}{{ $name }}:{{ $prop.Type }};"
                          "{{- end }}{{- end }}")
    got = tmpl.execute(Values([{"role": "user", "content": "test"}], tools=[WEATHER_TOOL]))
    assert got == ('{"city":{"type":"string","description":"City name"},'
                   '"unit":{"type":["string","null"],"enum":["c","f"]}}|city:string;unit:[string null];')


def test_tools_print_as_json_and_function_as_go_struct() -> None:
    tmpl = OllamaTemplate("{{ range .Messages }}{{ end }}{{ .Tools }}\n{{ range .Tools }}{{ . }}\n{{ .Function }}{{ end }}")
    got = tmpl.execute(Values([HELLO], tools=[WEATHER_TOOL]))
    tool_json = ('{"type":"function","function":{"name":"get_weather","description":"Get current weather for a city",'
                 '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
                 '"description":"City name"},"unit":{"type":["string","null"],"enum":["c","f"]}}}}}')
    # ollama/ollama#14601: "{get_weather Get current weather for a city {object <nil> <nil> [city] {...}}}"
    struct = ('{get_weather Get current weather for a city {object <nil> <nil> [city] '
              '{"city":{"type":"string","description":"City name"},"unit":{"type":["string","null"],"enum":["c","f"]}}}}')
    assert got == f"[{tool_json}]\n{tool_json}\n{struct}"


def test_tools_nil_empty_and_json_helper() -> None:
    tmpl = OllamaTemplate("{{ range .Messages }}{{ json . }}{{ end }}|{{ .Tools }}|{{ json .Tools }}|"
                          "{{ if .Tools }}t{{ end }}")
    msg = {"role": "user", "content": "<&>"}
    want_msg = ('{"Role":"user","Content":"\\u003c\\u0026\\u003e","Thinking":"","Images":null,"ToolCalls":null,'
                '"ToolName":"","ToolCallID":""}')
    assert tmpl.execute(Values([msg])) == want_msg + "|null|null|"
    assert tmpl.execute(Values([msg], tools=[])) == want_msg + "|[]|[]|"


def test_nested_tool_properties_keep_their_order() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "opts": {"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "number"}}},
        "list": {"type": "array", "items": {"type": "string", "minItems": 1}}}}}}
    tmpl = OllamaTemplate("{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function.Parameters.Properties }}"
                          "{{ range $n, $p := .Function.Parameters.Properties }} {{ $n }}={{ toTypeScriptType $p }}"
                          "{{ end }}{{ end }}")
    got = tmpl.execute(Values([HELLO], tools=[tool]))
    assert got == ('{"list":{"type":"array","items":{"minItems":1,"type":"string"}},'
                   '"opts":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"number"}}}}'
                   " list=any[] opts=Record<string, any>")


def test_think_values() -> None:
    tmpl = OllamaTemplate("{{ range .Messages }}{{ end }}{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}")
    assert tmpl.execute(Values.with_think([HELLO], None)) == "false  false"
    assert tmpl.execute(Values.with_think([HELLO], True)) == "true medium true"
    assert tmpl.execute(Values.with_think([HELLO], False)) == "false  true"
    assert tmpl.execute(Values.with_think([HELLO], "high")) == "true high true"


def test_legacy_template_turns_and_values() -> None:
    # per finished turn the whole template (with its appended {{ .Response }}), then the last
    # turn up to .Response; the messages path's keys are missing there: <no value>
    tmpl = OllamaTemplate("{{ if .System }}S={{ .System }} {{ end }}U={{ .Prompt }} A=")
    msgs = [{"role": "system", "content": "sys"}, HELLO, GREAT, SHOW]
    assert tmpl.execute(Values(msgs)) == ("S=sys U=Hello, how are you? A=I'm doing great. How can I help you today?"
                                          "U=I'd like to show off how chat templating works! A=")
    assert OllamaTemplate("{{ .Prompt }}/{{ .Tools }}/{{ .Suffix }}").execute(Values([HELLO])) == \
        "Hello, how are you?/<no value>/<no value>"
    # and the legacy keys are missing on the messages path
    assert OllamaTemplate("{{ .Prompt }}/{{ .Tools }}/{{ len .Messages }}").execute(Values([HELLO])) == \
        "<no value>/null/1"


def test_legacy_last_turn_runs_without_ollama_functions() -> None:
    # Ollama runs the cut template as a new template: its helpers are gone, builtins remain
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "q"}]
    tmpl = OllamaTemplate("{{ len .Prompt }} {{ .Prompt }}{{ .Response }}{{ json .Prompt }};")
    assert tmpl.execute(Values(msgs)) == '2 hiyo"hi";1 q'
    with pytest.raises(GoTemplateError, match='"json" is not a defined function'):
        OllamaTemplate("{{ json .Prompt }}{{ .Response }}").execute(Values(msgs))


def test_legacy_cut_drops_everything_after_response() -> None:
    tmpl = OllamaTemplate("<s>{{ .Prompt }}</s>{{ .Response }}</end>{{ .System }}")
    assert tmpl.execute(Values([HELLO])) == "<s>Hello, how are you?</s>"


# ---- Go's text/template semantics

def render(source: str, data: object = None, missing_key: str = "invalid") -> str:
    return Template(source).execute(data, missing_key)


@pytest.mark.parametrize("source, data, want", [
    # trimming: "{{- " and " -}}" eat all ASCII white space on their side; "{{-3}}" is a number
    ("a \n\t {{- 1 -}} \n b", None, "a1b"),
    ("a {{-3}} b", None, "a -3 b"),
    ("x {{/* a comment */}} y{{- /* trimmed */ -}}  z", None, "x  yz"),
    # literals: ints, floats (%v is the shortest %g), chars, raw strings, escapes
    ("{{ 1 }} {{ 1.5 }} {{ 1e6 }} {{ 100000.0 }} {{ 0x10 }} {{ 'a' }} {{ 1_000 }}", None, "1 1.5 1e+06 100000 16 97 1000"),
    ('{{ `raw\\n` }}|{{ "tab\\t\\u00e9\\x41" }}', None, "raw\\n|tab\té" + "A"),
    # variables: declare, assign in an inner scope, $ is the data
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ end }}{{ $x }}", None, "2"),
    ("{{ $ }}|{{ range .L }}{{ $.N }}{{ end }}", {"L": [1.0, 2.0], "N": "n"}, "map[L:[1 2] N:n]|nn"),
    ("{{ with $y := .A }}{{ $y }}{{ end }}", {"A": "a"}, "a"),
    # range: slices, maps in key order, ints, else, break, continue, two variables
    ("{{ range $i, $e := .L }}{{ $i }}={{ $e }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
    ("{{ range $e := .L }}{{ $e }}{{ end }}", {"L": ["a", "b"]}, "ab"),
    ("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", {"M": {"b": 1.0, "a": 2.0}}, "a=2;b=1;"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range .Missing }}x{{ else }}none{{ end }}", {}, "none"),
    ("{{ range 3 }}{{ . }}{{ end }}", None, "012"),
    ('{{ range .L }}{{ if eq . "b" }}{{ break }}{{ end }}{{ . }}{{ end }}', {"L": ["a", "b", "c"]}, "a"),
    ('{{ range .L }}{{ if eq . "b" }}{{ continue }}{{ end }}{{ . }}{{ end }}', {"L": ["a", "b", "c"]}, "ac"),
    # if / else if / else, with / else with; truth of empty values
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": 0.0, "B": [1.0]}, "b"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": "", "B": {}}, "c"),
    ("{{ with .X }}{{ . }}{{ else }}none{{ end }}", {"X": ""}, "none"),
    ("{{ with .X }}{{ . }}{{ else with .Y }}y={{ . }}{{ end }}", {"X": None, "Y": "why"}, "y=why"),
    ("{{ if .S }}a map with a key is true{{ end }}", {"S": {"a": None}}, "a map with a key is true"),
    # and/or return an operand and stop early; not
    ('{{ and 1 0 "x" }}|{{ or 0 "" "y" }}|{{ and 1 2 }}|{{ or 0 "" }}|{{ not 0 }}|{{ not "a" }}', None, "0|y|2||true|false"),
    ("{{ or 1 .X.Y.Z }}", {}, "1"),
    ('{{ if and .A (eq .B "x") }}yes{{ end }}', {"A": True, "B": "x"}, "yes"),
    # comparisons: eq takes several, ints and uints compare, strings by bytes
    ('{{ eq 1 2 1 }} {{ eq "a" "a" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1 2 }}', None,
     "true true true true true true false"),
    ("{{ eq .F 1.0 }} {{ eq (index .S 0) 97 }} {{ eq .Missing 1 }}", {"F": 1.0, "S": "a"}, "true true false"),
    # len counts bytes; index and slice
    ('{{ len "héllo" }} {{ len .L }} {{ len .M }}', {"L": [1.0], "M": {"a": 1.0}}, "6 1 1"),
    ('{{ index .L 1 }} {{ index "abc" 1 }} {{ index .M "a" }} {{ index .N 0 1 }}',
     {"L": ["a", "b"], "M": {"a": "x"}, "N": [["p", "q"]]}, "b 98 x q"),
    ('{{ slice "abcdef" 1 3 }} {{ slice .L 1 }} {{ slice .L 0 1 }} {{ slice .L }}', {"L": ["a", "b", "c"]},
     "bc [b c] [a] [a b c]"),
    ('{{ index .M "zz" }}', {"M": {"a": "x"}}, "<no value>"),
    # print, printf, println: Go's spacing and verbs
    ('{{ print 1 2 "a" "b" 3 nil }}', None, "1 2ab3 <nil>"),
    ('{{ println 1 "a" }}', None, "1 a\n"),
    ('{{ printf "%d-%s-%v-%q-%5.1f|%-4s|%04d|%x|%X|%t|%c|%U|%e|%g|%.3g|%%" 3 "s" .L "q" 2.25 "ab" 42 255 "hi" true '
     '65 65 1234.5678 0.000012345 3.14159 }}',
     {"L": [1.0, "x"]}, '3-s-[1 x]-"q"-  2.2|ab  |0042|ff|6869|true|A|U+0041|1.234568e+03|1.2345e-05|3.14|%'),
    ('{{ printf "%d %d" 1 }}|{{ printf "%d" 1 2 }}|{{ printf "%z" 1 }}|{{ printf "%d" "x" }}|{{ printf "%s" nil }}', None,
     "1 %!d(MISSING)|1%!(EXTRA int=2)|%!z(int=1)|%!d(string=x)|%!s(<nil>)"),
    ('{{ printf "%v|%+d|% d|%x|%6.2f|%-8.3e|" .M 5 5 -255 2.5 1234.5 }}', {"M": {"b": [True, None], "a": 2.5}},
     "map[a:2.5 b:[true <nil>]]|+5| 5|-ff|  2.50|1.234e+03|"),
    ('{{ printf "%T %T %T %T %T" 1 1.5 "s" .L .M }}', {"L": [], "M": {}},
     "int float64 string []interface {} map[string]interface {}"),
    # html, js, urlquery
    ('{{ html "<a href=\'x\'>&\\"" }}', None, "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
    ('{{ js "it\'s <b>=&\\\\" }}', None, "it\\'s \\u003Cb\\u003E\\u003D\\u0026\\\\"),
    ('{{ urlquery "a b&c/d" }} {{ "x y" | urlquery }}', None, "a+b%26c%2Fd x+y"),
    # pipelines: the previous value is the last argument
    ('{{ .X | printf "%s!" }} {{ "a" | eq "a" }} {{ .L | len }} {{ 3 | printf "%d-%d" 2 }}', {"X": "hi", "L": [1.0, 2.0]},
     "hi! true 2 2-3"),
    # chains on a parenthesized pipeline, fields of fields
    ("{{ (index .L 0).Name }} {{ .A.B.C }}", {"L": [{"Name": "nm"}], "A": {"B": {"C": "c"}}}, "nm c"),
    # define / template / block: the callee's $ is its argument
    ('{{ define "T" }}[{{ . }}{{ $ }}]{{ end }}{{ template "T" "x" }}{{ block "B" 2 }}<{{ . }}>{{ end }}', None, "[xx]<2>"),
    ('{{ define "T" }}[{{ .N }}]{{ end }}{{ range .L }}{{ template "T" . }}{{ end }}',
     {"L": [{"N": 1.0}, {"N": 2.0}]}, "[1][2]"),
    # how values print: nothing, nil, nested containers, numbers from JSON
    ("{{ .Missing }}|{{ .L }}|{{ .M }}|{{ .N }}|{{ .F }}",
     {"L": [1.0, None, "a", [True]], "M": {"z": None, "a": {"b": 2.5}}, "N": None, "F": 1e21},
     "<no value>|[1 <nil> a [true]]|map[a:map[b:2.5] z:<nil>]|<no value>|1e+21"),
    ("{{ .Missing.Deeper }}", {}, "<no value>"),
    ("{{ .B }} {{ printf \"%s\" .B }}", {"B": b"hi"}, "[104 105] hi"),
])
def test_go_semantics(source: str, data: object, want: str) -> None:
    assert render(source, data) == want


def test_missing_key_options() -> None:
    assert render("{{ .Missing }}|{{ .M.x }}", {"M": {}}, "zero") == "<no value>|<no value>"
    with pytest.raises(GoTemplateError, match="nil pointer evaluating interface {}.Field"):
        render("{{ .Missing.Field }}", {}, "zero")
    with pytest.raises(GoTemplateError, match='map has no entry for key "Missing"'):
        render("{{ .Missing }}", {}, "error")


@pytest.mark.parametrize("source, error", [
    ("{{ nofunc }}", 'function "nofunc" not defined'),
    ("{{ $undefined }}", 'undefined variable "\\$undefined"'),
    ("{{ break }}", "{{break}} outside {{range}}"),
    ("{{ .X", "unclosed action"),
    ("{{ 1 | 2 }}", "non executable command in pipeline stage 2"),
    ('{{ "x" }}{{ end }}', "unexpected {{end}}"),
    ("{{ if 1 }}unterminated", "unexpected EOF"),
    ("{{ 'ab' }}", "malformed character constant"),
    ("{{/* unclosed ", "unclosed comment"),
    ("{{ /* not a comment */ }}", "unexpected"),
    ("{{ $x := 1 }}{{ $x, $y := 2 }}", "too many declarations"),
    ("{{ 3x }}", "bad number syntax"),
    ("{{ .A.B.}}", "bad character|unexpected"),
    ('{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}', "multiple definition of template"),
])
def test_parse_errors(source: str, error: str) -> None:
    with pytest.raises(GoTemplateError, match=error):
        Template(source)


@pytest.mark.parametrize("source, data, error", [
    ('{{ eq 1 "a" }}', None, "incompatible types for comparison: int and string"),
    ("{{ eq .F 1 }}", {"F": 1.0}, "incompatible types for comparison: float64 and int"),
    ("{{ lt true false }}", None, "invalid type for comparison"),
    ("{{ len 3 }}", None, "len of type int"),
    ("{{ index .L 5 }}", {"L": [1.0]}, "index out of range: 5"),
    ("{{ .X.Y }}", {"X": "str"}, "can't evaluate field Y in type string"),
    ("{{ 1 2 }}", None, "can't give argument to non-function 1"),
    ("{{ not }}", None, "wrong number of args for not: want 1 got 0"),
    ("{{ eq 1 }}", None, "missing argument for comparison"),
    ('{{ template "nope" }}', None, 'template "nope" not defined'),
    ("{{ range .S }}{{ end }}", {"S": "abc"}, "range can't iterate over abc"),
    ('{{ printf 3 }}', None, "expected string; found 3"),
    ('{{ slice .L 2 1 }}', {"L": [1.0, 2.0]}, "invalid slice index: 2 > 1"),
    ('{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" 1 }}', None, "maximum template depth"),
])
def test_exec_errors(source: str, data: object, error: str) -> None:
    with pytest.raises(GoTemplateError, match=error):
        render(source, data)


# ---- models/template.py: the API the server calls

def test_render_go_chat() -> None:
    tmpl = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}\n{{ end }}<|assistant|>"
    got = render_go(tmpl, [HELLO], system="Be kind.")
    assert got.text == "<|system|>Be kind.\n<|user|>Hello, how are you?\n<|assistant|>" and got.stop == ()
    # the model's SYSTEM does not replace the request's own system message
    assert render_go(tmpl, [SYSTEM, HELLO], system="Be kind.").text.startswith("<|system|>You are a helpful")


def test_render_go_generate() -> None:
    legacy = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}"
    assert render_go_generate(legacy, "hello", system="be nice").text == "S:be nice U:hello A:"
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert render_go_generate(legacy, "hello", history=history).text == "U:q A:aU:hello A:"
    fim = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ else }}{{ .Prompt }}{{ end }}"
    assert render_go_generate(fim, "def f(", suffix="return 1").text == "<PRE> def f( <SUF>return 1 <MID>"
    assert render_go_generate(fim, "def f(").text == "def f("
    tools = "{{ range .Messages }}{{ .Content }}{{ end }}|{{ .Tools }}"
    assert render_go_generate(tools, "p").text == "p|[]"  # generate passes an empty tool list


def test_render_go_errors_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="invalid template"):
        render_go("{{ .Prompt ", [HELLO])
    with pytest.raises(TemplateError, match="incompatible types"):
        render_go('{{ range .Messages }}{{ eq .Role 1 }}{{ end }}', [HELLO])
    with pytest.raises(TemplateError):
        render_go("{{ range .Messages }}{{ end }}", [{"role": "user", "content": 5}])


def test_is_go_template() -> None:
    assert is_go_template("{{ .Prompt }}")
    assert is_go_template((DATA / "chatml.gotmpl").read_text())
    assert is_go_template("plain text")
    assert not is_go_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not is_go_template("{{ bos_token }}{{ messages[0]['content'] }}")
    # the Jinja path is unchanged
    assert render_chat("{% for m in messages %}{{ m.content }}{% endfor %}", [HELLO]).text == "Hello, how are you?"
