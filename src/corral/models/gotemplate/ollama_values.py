"""Ollama's template values: messages and tools as the Go types its templates see.

Ollama (template/template.go) hands templates `templateMessage`, `templateTool` and friends.
What a template can observe about them is reproduced: field names and order (they print as
{a b c}), which types have a String method (tools, a tool, tool-call arguments and parameter
properties print as JSON; a tool's `.Function` and `.Function.Parameters` do not, so they print
as Go structs, exactly as Ollama does today), JSON keys and omitempty, map key order (sorted for
Go maps, insertion order for api.ToolPropertiesMap) and every JSON number being a float64.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import GoTemplateError
from .gojson import marshal, marshal_ordered
from .values import Field, GoMap, GoSlice, GoStruct, Method, StructType, from_json


def _json_string(v: Any) -> str:
    return marshal(v)


def _string_or_empty_object(v: Any) -> str:
    # templateArgs / templateProperties: String() of a nil map is "{}", not "null"
    return "{}" if v.nil else marshal(v)


# ---- api.PropertyType: []string that prints "string" for one type, "[a b]" for several

def _property_type_string(pt: GoSlice) -> str:
    if not pt:
        return ""
    if len(pt) == 1:
        return pt[0]
    return "[" + " ".join(pt) + "]"


def _property_type_json(pt: GoSlice) -> str:
    return marshal(pt[0]) if len(pt) == 1 else marshal(GoSlice(pt, "[]string", False, nil=pt.nil))


def property_type(value: Any) -> GoSlice:
    if value is None:
        items, nil = [], True
    elif isinstance(value, str):
        items, nil = [value], False
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        items, nil = list(value), False
    else:
        raise GoTemplateError(f"invalid tool property type: {value!r}")
    pt = GoSlice(items, "api.PropertyType", elem_any=False,
                 methods={"String": Method(_property_type_string)}, nil=nil)
    pt.marshal = _property_type_json
    return pt


# ---- api.ToolProperty and *api.ToolPropertiesMap

def _ts_type(json_type: str) -> str:
    return {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
            "array": "any[]", "object": "Record<string, any>", "null": "null"}.get(json_type, "any")


def to_typescript_type(prop: GoStruct) -> str:
    """api.ToolProperty.ToTypeScriptType."""
    assert prop.values is not None  # a ToolProperty, never a nil pointer
    any_of = prop.values["AnyOf"]
    if any_of:
        return " | ".join(to_typescript_type(p) for p in any_of)
    types = prop.values["Type"]
    if not types:
        return "any"
    return " | ".join(_ts_type(t) for t in types)


def _props_len(m: GoStruct) -> int:
    return 0 if m.values is None or m.values["om"] is None else len(m.values["om"])


def _props_to_map(m: GoStruct) -> GoMap:
    pairs = None if m.values is None else m.values["om"]
    return properties_map(None if pairs is None else dict(pairs))


def _props_json(m: GoStruct) -> str:
    pairs = None if m.values is None else m.values["om"]
    return "null" if pairs is None else marshal_ordered(pairs)


TOOL_PROPERTIES_MAP = StructType(
    "api.ToolPropertiesMap", (Field("om"),),
    methods={"Len": Method(_props_len), "ToMap": Method(_props_to_map)},
    marshal_json=_props_json)

TOOL_PROPERTY = StructType("api.ToolProperty", (
    Field("AnyOf", json="anyOf", omitempty=True),
    Field("Type", json="type", omitempty=True),
    Field("Items", slot="any", json="items", omitempty=True),
    Field("Description", json="description", omitempty=True),
    Field("Enum", json="enum", omitempty=True),
    Field("Properties", slot="ptr", json="properties", omitempty=True),
    Field("Required", json="required", omitempty=True),
), methods={"ToTypeScriptType": Method(to_typescript_type)})


def _strings(value: Any, what: str) -> GoSlice:
    if value is None:
        return GoSlice((), "[]string", elem_any=False, nil=True)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise GoTemplateError(f"invalid {what}: {value!r}")
    return GoSlice(value, "[]string", elem_any=False)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GoTemplateError(f"invalid {what}: {value!r}")
    return value


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoTemplateError(f"invalid {what}: {value!r}")
    return value


def tool_property(p: Any) -> GoStruct:
    p = _object(p, "tool property")
    any_of = p.get("anyOf")
    if any_of is not None and not isinstance(any_of, list):
        raise GoTemplateError(f"invalid tool property anyOf: {any_of!r}")
    nested = p.get("properties")
    if nested is None:
        props = GoStruct(TOOL_PROPERTIES_MAP, None, ptr=True)
    else:
        props = GoStruct(TOOL_PROPERTIES_MAP, {"om": [(str(k), tool_property(v))
                                                      for k, v in _object(nested, "properties").items()]},
                         ptr=True)
    enum = p.get("enum")
    return GoStruct(TOOL_PROPERTY, {
        "AnyOf": GoSlice([tool_property(x) for x in any_of or ()], "[]api.ToolProperty",
                         elem_any=False, nil=any_of is None),
        "Type": property_type(p.get("type")),
        "Items": from_json(p.get("items")),
        "Description": _text(p.get("description"), "tool property description"),
        "Enum": GoSlice(from_json(enum) if isinstance(enum, list) else (), nil=enum is None),
        "Properties": props,
        "Required": _strings(p.get("required"), "tool property required"),
    })


def _zero_property() -> GoStruct:
    return tool_property({})


def properties_map(props: dict[str, GoStruct] | None) -> GoMap:
    """template.templateProperties: map[string]api.ToolProperty, printing as JSON."""
    return GoMap(props or {}, "template.templateProperties", elem_zero=_zero_property,
                 methods={"String": Method(_string_or_empty_object)}, nil=props is None)


# ---- tools

TOOL_FUNCTION_PARAMETERS = StructType("template.templateToolFunctionParameters", (
    Field("Type", json="type"),
    Field("Defs", slot="any", json="$defs", omitempty=True),
    Field("Items", slot="any", json="items", omitempty=True),
    Field("Required", json="required", omitempty=True),
    Field("Properties", json="properties"),
))

TOOL_FUNCTION = StructType("template.templateToolFunction", (
    Field("Name", json="name"),
    Field("Description", json="description"),
    Field("Parameters", json="parameters"),
))

TOOL = StructType("template.templateTool", (
    Field("Type", json="type"),
    Field("Items", slot="any", json="items", omitempty=True),
    Field("Function", json="function"),
), methods={"String": Method(_json_string)})


def tool(t: Any) -> GoStruct:
    t = _object(t, "tool")
    fn = _object(t.get("function"), "tool function")
    params = _object(fn.get("parameters"), "tool parameters")
    props = params.get("properties")
    return GoStruct(TOOL, {
        "Type": _text(t.get("type"), "tool type"),
        "Items": from_json(t.get("items")),
        "Function": GoStruct(TOOL_FUNCTION, {
            "Name": _text(fn.get("name"), "tool name"),
            "Description": _text(fn.get("description"), "tool description"),
            "Parameters": GoStruct(TOOL_FUNCTION_PARAMETERS, {
                "Type": _text(params.get("type"), "tool parameters type"),
                "Defs": from_json(params.get("$defs")),
                "Items": from_json(params.get("items")),
                "Required": _strings(params.get("required"), "tool parameters required"),
                "Properties": properties_map(
                    None if props is None else {str(k): tool_property(v)
                                                for k, v in _object(props, "properties").items()}),
            }),
        }),
    })


def tools(items: list | None) -> GoSlice:
    """template.templateTools: nil for no tools, and printing as JSON."""
    return GoSlice([tool(t) for t in items or ()], "template.templateTools", elem_any=False,
                   methods={"String": Method(_json_string)}, nil=items is None)


# ---- messages

TOOL_CALL_FUNCTION = StructType("template.templateToolCallFunction", (
    Field("Index"), Field("Name"), Field("Arguments")))

TOOL_CALL = StructType("template.templateToolCall", (Field("ID"), Field("Function")))

MESSAGE = StructType("template.templateMessage", (
    Field("Role"), Field("Content"), Field("Thinking"), Field("Images"), Field("ToolCalls"),
    Field("ToolName"), Field("ToolCallID")))


def arguments(value: Any) -> GoMap:
    """template.templateArgs: a Go map (so sorted), printing as JSON ("{}" when absent)."""
    if isinstance(value, str):  # OpenAI clients send arguments as a JSON string
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise GoTemplateError(f"invalid tool call arguments: {value!r}") from None
    if value is not None and not isinstance(value, dict):
        raise GoTemplateError(f"invalid tool call arguments: {value!r}")
    return GoMap(from_json(value) if value is not None else {}, "template.templateArgs",
                 methods={"String": Method(_string_or_empty_object)}, nil=value is None)


def tool_call(call: Any) -> GoStruct:
    call = _object(call, "tool call")
    fn = _object(call.get("function"), "tool call function")
    index = fn.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, (int, float)) or index != int(index):
        raise GoTemplateError(f"invalid tool call index: {index!r}")
    return GoStruct(TOOL_CALL, {
        "ID": _text(call.get("id"), "tool call id"),
        "Function": GoStruct(TOOL_CALL_FUNCTION, {
            "Index": int(index),
            "Name": _text(fn.get("name"), "tool call name"),
            "Arguments": arguments(fn.get("arguments")),
        }),
    })


def _image(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    try:
        return base64.b64decode(_text(data, "image"), validate=True)
    except (binascii.Error, ValueError):
        raise GoTemplateError("invalid image: not base64") from None


def message(m: dict[str, Any]) -> GoStruct:
    """A *templateMessage (a pointer, as in Ollama's []*templateMessage)."""
    images = m.get("images")
    calls = [tool_call(c) for c in m.get("tool_calls") or ()]
    return GoStruct(MESSAGE, {
        "Role": _text(m.get("role"), "message role").lower(),
        "Content": _text(m.get("content"), "message content"),
        "Thinking": _text(m.get("thinking"), "message thinking"),
        "Images": GoSlice([_image(i) for i in images or ()], "[]api.ImageData", elem_any=False,
                          nil=images is None),
        "ToolCalls": GoSlice(calls, "[]template.templateToolCall", elem_any=False, nil=not calls),
        "ToolName": _text(m.get("tool_name"), "message tool_name"),
        "ToolCallID": _text(m.get("tool_call_id"), "message tool_call_id"),
    }, ptr=True)


def messages(items: list[dict[str, Any]] | None) -> GoSlice:
    return GoSlice([message(m) for m in items or ()], "[]*template.templateMessage", elem_any=False,
                   nil=not items)
