"""cluster/messages.py: the values that cross the ingress → node hop (pure)."""

from __future__ import annotations

import json
import pickle

import pytest

from corral.cluster.messages import Body, Head, Part, ProxyRequest


def _post(path: str, body: object) -> ProxyRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ProxyRequest("POST", path, b"", ((b"content-type", b"application/json"),), raw)


@pytest.mark.parametrize(("path", "body", "model"), [
    ("/api/chat", {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi", "name": "x"}]},
     "smollm2:135m"),
    ("/api/generate", {"model": "SmolLM2:135m", "prompt": "hi"}, "SmolLM2:135m"),
    ("/api/show", {"name": "gemma3:270m"}, "gemma3:270m"),  # the older spelling
    ("/api/show", {"model": "", "name": "gemma3:270m"}, "gemma3:270m"),  # as ModelRequest.target: model or name
    ("/api/delete", {"model": "a:b", "name": "c:d"}, "a:b"),
    ("/api/create", {"name": "mine", "modelfile": "FROM smollm2:135m"}, "mine"),
    ("/api/copy", {"source": "smollm2:135m", "destination": "copy:1"}, "smollm2:135m"),
    ("/v1/chat/completions", {"model": "smollm2:135m", "messages": []}, "smollm2:135m"),
    ("/v1/messages", {"model": "smollm2:135m", "max_tokens": 5, "messages": []}, "smollm2:135m"),
    ("/api/generate", {"model": 5}, None),  # not a string: the node answers 400, any node may
    ("/api/generate", {"model": "   "}, None),
    ("/api/generate", [{"model": "x"}], None),  # not an object
    ("/api/generate", b"{not json", None),
    ("/api/generate", b"\xff\xfe", None),
    ("/api/generate", b"[" * 100_000, None),  # too deep for json: no crash
    ("/api/generate", b"", None),
])
def test_model_is_what_the_route_reads(path, body, model):
    assert _post(path, body).model() == model


def test_model_from_the_path_of_openai_retrieve():
    assert ProxyRequest("GET", "/v1/models/smollm2:135m", b"", (), b"").model() == "smollm2:135m"
    assert ProxyRequest("GET", "/v1/models/", b"", (), b"").model() is None
    assert ProxyRequest("GET", "/v1/models", b"", (), b"").model() is None
    assert ProxyRequest("GET", "/api/tags", b"", (), b"").model() is None


def test_values_pickle_and_stay_frozen():
    request = _post("/api/chat", {"model": "m"})
    parts: list[Part] = [Head(200, ((b"content-type", b"application/x-ndjson"),)), Body(b'{"a":1}\n', True),
                         Body(b"", False)]
    for value in (request, *parts):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value and type(copy) is type(value)
    with pytest.raises(AttributeError):
        request.path = "/other"
    assert not hasattr(request, "__dict__")  # slotted: small to pickle, no stray fields


def test_of_reads_an_asgi_scope_and_headers_ignore_case():
    scope = {"type": "http", "method": "POST", "path": "/api/chat", "query_string": b"a=1",
             "headers": [(b"content-type", b"application/json"), (b"x-corral-priority", b"batch")],
             "client": ("10.0.0.7", 51234)}
    request = ProxyRequest.of(scope, b'{"model": "m"}')
    assert request == ProxyRequest("POST", "/api/chat", b"a=1", ((b"content-type", b"application/json"),
                                                                   (b"x-corral-priority", b"batch")),
                                   b'{"model": "m"}', "10.0.0.7")
    assert request.header("X-Corral-Priority") == b"batch" and request.header("authorization") is None
    assert ProxyRequest.of({"method": "GET", "path": "/"}, b"").client == "127.0.0.1"
    assert Head(503, ((b"Retry-After", b"1"),)).header("retry-after") == b"1"
