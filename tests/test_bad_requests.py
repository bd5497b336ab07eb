"""Bad input gets a clear 4xx JSON error."""

from __future__ import annotations

import pytest
from conftest import SMOL


@pytest.fixture(scope="module")
def http(server):
    with server.client() as c:
        yield c


def test_root_and_version(http):
    assert http.get("/").text == "corral is running"
    assert http.get("/api/version").json()["version"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_malformed_json_is_400(http, path):
    r = http.post(path, content=b'{"model": "smollm2:135m", "prompt": ')
    assert r.status_code == 400
    assert "error" in r.json()


@pytest.mark.parametrize("options", [{"temperature": "hot"}, {"num_predict": 1.5}, {"top_k": "40"},
                                     {"stop": 5}, {"num_predict": -3}, {"num_ctx": 0}])
def test_bad_option_types_are_400(http, options):
    r = http.post("/api/generate", json={"model": SMOL, "prompt": "hi", "options": options})
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_missing_model_field_is_400(http):
    r = http.post("/api/generate", json={"prompt": "hi"})
    assert r.status_code == 400 and "model" in r.json()["error"]


def test_invalid_model_name_is_400(http):
    r = http.post("/api/generate", json={"model": "../../etc/passwd", "prompt": "hi"})
    assert r.status_code == 400


def test_unknown_role_is_400(http):
    r = http.post("/api/chat", json={"model": SMOL, "messages": [{"role": "wizard", "content": "hi"}]})
    assert r.status_code == 400


def test_bad_keep_alive_is_400(http):
    r = http.post("/api/generate", json={"model": SMOL, "prompt": "hi", "keep_alive": "soon"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]


def test_unknown_model_plain_http_404(http):
    r = http.post("/api/chat", json={"model": "nosuch", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and "not found" in r.json()["error"]


def test_body_too_large_is_413(start_server):
    server = start_server(CORRAL_MAX_BODY="1KiB")
    with server.client() as c:
        r = c.post("/api/generate", json={"model": SMOL, "prompt": "x" * 4096})
        assert r.status_code == 413
        # No Content-Length to trust: a chunked body is counted as it comes.
        chunks = (piece for piece in [b'{"model": "smollm2:135m", "prompt": "', b"x" * 2048, b'"}'])
        r = c.post("/api/generate", content=chunks)
        assert r.status_code == 413 and "exceeds 1024 bytes" in r.json()["error"]
        r = c.post("/v1/completions", content=(p for p in [b"x" * 2048]))
        assert r.status_code == 413 and r.json()["error"]["message"]


def test_body_not_utf8_is_400(http):
    r = http.post("/api/generate", content=b'{"model": "smollm2:135m", "prompt": "caf\xe9"}')
    assert r.status_code == 400 and r.json()["error"] == "invalid JSON body: not UTF-8 (byte 0xe9 at offset 40)"
