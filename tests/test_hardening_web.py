"""Web exposure and slow clients, on a live server: Origin/Host rules (DNS rebinding, cross-origin
POSTs), header and body deadlines, the connection cap, non-finite numbers, lone surrogates, /docs."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from conftest import GEMMA, SMOL

from corral.api.security import allowed_host, is_loopback, origin_regex

TIMEOUT = 1  # CORRAL_HEADER_TIMEOUT and CORRAL_BODY_TIMEOUT for this module's server
CAP = 20  # CORRAL_MAX_CONNECTIONS


@pytest.fixture(scope="module")
def srv(start_server):
    return start_server(OLLAMA_ORIGINS="https://app.example.com,chrome-extension://*",
                        CORRAL_HEADER_TIMEOUT=str(TIMEOUT), CORRAL_BODY_TIMEOUT=str(TIMEOUT),
                        CORRAL_MAX_CONNECTIONS=str(CAP), OLLAMA_NUM_PARALLEL="2")


def port(srv) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def raw(srv, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port(srv)), timeout=10)
    s.sendall(data)
    return s


def read_until_closed(s: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start, got = time.monotonic(), b""
    s.settimeout(limit)
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got, time.monotonic() - start


def loaded(srv) -> list[str]:
    return [m["name"] for m in httpx.get(srv.url + "/api/ps").json()["models"]]


# -- item 5: Origin and Host -------------------------------------------------------------------

def test_cross_origin_text_plain_post_is_refused_before_any_work(srv):
    body = json.dumps({"model": GEMMA, "prompt": "say hi", "stream": False})
    r = httpx.post(srv.url + "/api/generate", content=body,
                   headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}, timeout=60)
    assert r.status_code == 403 and "origin" in r.json()["error"]
    assert "access-control-allow-origin" not in r.headers
    r = httpx.post(srv.url + "/v1/chat/completions", headers={"Origin": "https://evil.example"},
                   json={"model": GEMMA, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and "origin" in r.json()["error"]["message"]  # OpenAI-shaped under /v1
    preflight = httpx.options(srv.url + "/api/generate", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403
    assert GEMMA not in loaded(srv)  # nothing was loaded, so nothing was generated


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:8080", "https://localhost",
                                    "http://0.0.0.0:5173", "http://[::1]:8000", "app://obsidian.md",
                                    "file://", "tauri://localhost", "vscode-webview://abc", "vscode-file://vscode-app",
                                    "https://app.example.com", "chrome-extension://abcdef", "HTTP://LOCALHOST:3000"])
def test_allowed_origins_pass_and_get_cors_headers(srv, origin):
    r = httpx.get(srv.url + "/api/tags", headers={"Origin": origin})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin
    pre = httpx.options(srv.url + "/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost.evil.example",
                                    "http://127.0.0.1.nip.io:3000", "https://app.example.com.evil", "chrome-extension:/x"])
def test_other_origins_are_403(srv, origin):
    r = httpx.get(srv.url + "/api/tags", headers={"Origin": origin})
    assert r.status_code == 403 and r.json()["error"].startswith("forbidden: origin")


def test_no_origin_is_allowed_whatever_the_content_type(srv):
    # curl -d sends application/x-www-form-urlencoded and no Origin; SDKs send no Origin either.
    r = httpx.post(srv.url + "/api/show", content=json.dumps({"model": SMOL}),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "attacker.com:80", "8.8.8.8:{port}",
                                  "localhost.evil.example:{port}"])
def test_foreign_host_is_403_when_bound_to_loopback(srv, host):
    # DNS rebinding: the page's name now resolves to 127.0.0.1, so the browser sends its own name.
    r = httpx.get(srv.url + "/api/tags", headers={"Host": host.format(port=port(srv))})
    assert r.status_code == 403 and "Host" in r.json()["error"]
    r = httpx.post(srv.url + "/api/generate", headers={"Host": host.format(port=port(srv))},
                   json={"model": GEMMA, "prompt": "hi", "stream": False})
    assert r.status_code == 403
    assert GEMMA not in loaded(srv)


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST:{port}",
                                  "localhost", "app.localhost:{port}", "0.0.0.0:{port}", "10.1.2.3:{port}",
                                  f"{socket.gethostname()}:{{port}}"])
def test_local_hosts_pass(srv, host):
    r = httpx.get(srv.url + "/api/tags", headers={"Host": host.format(port=port(srv))})
    assert r.status_code == 200, r.text


def test_host_and_origin_rules_units():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.168.1.5")
    assert allowed_host("") and allowed_host("[::1]") and allowed_host("::1") and allowed_host("printer.local")
    assert not allowed_host("evil.example:11434") and not allowed_host("[2001:4860:4860::8888]:80")
    import re
    rx = re.compile(origin_regex(("https://*.corp.example",)))
    assert rx.fullmatch("https://a.corp.example") and not rx.fullmatch("https://a.corp.example.evil")


def test_ollama_origins_star_allows_every_origin(start_server):
    server = start_server(OLLAMA_ORIGINS="*")
    r = httpx.get(server.url + "/api/tags", headers={"Origin": "http://anything.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"]


# -- item 9: slow clients -----------------------------------------------------------------------

def test_half_a_request_line_is_closed_after_the_header_timeout(srv):
    s = raw(srv, b"POST /api/generate HTT")
    got, took = read_until_closed(s)
    assert TIMEOUT * 0.8 < took < TIMEOUT + 2, took
    assert got.startswith(b"HTTP/1.1 408") and b"headers not received" in got


def test_silent_and_dripping_connections_are_closed(srv):
    silent = raw(srv, b"")
    drip = raw(srv, b"G")
    start = time.monotonic()
    for ch in b"ET / HTTP/1.1\r\n":  # one byte every 0.1 s: the deadline is not reset by each byte
        try:
            drip.sendall(bytes([ch]))
        except OSError:
            break
        time.sleep(0.1)
    read_until_closed(drip)
    assert time.monotonic() - start < TIMEOUT + 2
    _, took_silent = read_until_closed(silent)
    assert took_silent < TIMEOUT + 2


def test_keep_alive_connection_then_partial_headers_is_closed(srv):
    s = raw(srv, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.3)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.")  # the next request stalls in its headers
    got, took = read_until_closed(s)
    assert took < TIMEOUT + 2 and got.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("path", ["/api/generate", "/v1/chat/completions", "/api/blobs/sha256:" + "0" * 64])
def test_chunked_body_that_never_ends_gets_408(srv, path):
    s = raw(srv, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "a\r\n{\"model\": \r\n".encode())
    got, took = read_until_closed(s)
    assert took < TIMEOUT + 2, took
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert "request body" in (error["message"] if path.startswith("/v1/") else error)


def test_short_content_length_body_gets_408(srv):
    s = raw(srv, b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"model\"")
    got, took = read_until_closed(s)
    assert took < TIMEOUT + 2 and got.startswith(b"HTTP/1.1 408")


def test_body_timeout_does_not_cut_long_streaming_replies(srv):
    """Once the body is in, receive() is only the disconnect listener: a reply may outlast the timeout."""
    start = time.monotonic()
    lines = []
    with httpx.stream("POST", srv.url + "/api/generate", timeout=120, json={
            "model": SMOL, "prompt": "Write a very long story about a dragon and a knight.",
            "options": {"temperature": 0, "num_predict": 150}}) as r:
        for line in r.iter_lines():
            lines.append(json.loads(line))
    assert r.status_code == 200 and lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 150
    assert time.monotonic() - start > TIMEOUT  # the reply did outlast the body timeout


def test_idle_connections_beyond_the_cap_do_not_stop_the_server(srv):
    idle = [raw(srv, b"") for _ in range(CAP + 10)]
    time.sleep(0.3)
    try:
        r = httpx.get(srv.url + "/api/tags", timeout=5)
        assert r.status_code == 503 and "too many connections" in r.json()["error"]
    except httpx.TransportError:
        pass  # refused before the request was read: also fine
    over = [read_until_closed(s, 5) for s in idle[CAP:]]  # the ones past the cap: 503 at once
    assert all(got.startswith(b"HTTP/1.1 503") and took < 2 for got, took in over)
    time.sleep(TIMEOUT + 0.5)  # the header deadline frees the rest
    assert httpx.get(srv.url + "/api/tags", timeout=5).status_code == 200
    assert all(read_until_closed(s, 5)[1] < 1 for s in idle[:CAP])  # all closed by now
    assert srv.proc.poll() is None


# -- item 10: numbers, surrogates, /docs -------------------------------------------------------

@pytest.mark.parametrize("path,body,field", [
    ("/api/generate", '{"model": "%s", "prompt": "hi", "options": {"temperature": 1e309}}' % SMOL, "options.temperature"),
    ("/api/generate", '{"model": "%s", "prompt": "hi", "options": {"top_p": -1e309}}' % SMOL, "options.top_p"),
    ("/api/generate", '{"model": "%s", "prompt": "hi", "options": {"seed": NaN}}' % SMOL, "options.seed"),
    ("/api/generate", '{"model": "%s", "prompt": "hi", "keep_alive": Infinity}' % SMOL, "keep_alive"),
    ("/api/generate", '{"model": "%s", "prompt": "hi", "options": {"foo": -Infinity}}' % SMOL, "options.foo"),
    ("/api/chat", '{"model": "%s", "messages": [], "format": {"type": "object", "properties": {"n": '
                  '{"type": "number", "maximum": 1e999}}}}' % SMOL, "format.properties.n.maximum"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], '
                             '"tools": [{"type": "function", "function": {"name": "f", "x": [1, NaN]}}]}' % SMOL,
     "tools.0.function.x.1"),
    ("/api/create", '{"model": "x", "from": "%s", "parameters": {"temperature": 1e309}}' % SMOL, "parameters.temperature"),
    ("/api/embed", '{"model": "%s", "input": "hi", "options": {"temperature": 1E+400}}' % SMOL, "options.temperature"),
])
def test_non_finite_numbers_are_400_naming_the_field(srv, path, body, field):
    r = httpx.post(srv.url + path, content=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert "non-finite" in message and field in message, message


def test_finite_extremes_still_pass(srv):
    r = httpx.post(srv.url + "/api/generate", timeout=60, content=(
        '{"model": "%s", "prompt": "hi", "stream": false, "options": {"temperature": 1e-320, '
        '"top_p": 1.0e0, "num_predict": 1}}' % SMOL))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path,body,field", [
    ("/api/generate", '{"model": "%s", "prompt": "a\\ud800b"}' % SMOL, "prompt"),
    ("/api/chat", '{"model": "%s", "messages": [{"role": "user", "content": "ok"}, '
                  '{"role": "user", "content": "\\udfff"}]}' % SMOL, "messages.1.content"),
    ("/api/embed", '{"model": "%s", "input": ["fine", "\\uDC00 low first"]}' % SMOL, "input.1"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "\\ud83d"}]}' % SMOL,
     "messages.0.content"),
    ("/api/chat", '{"model": "%s", "messages": [], "format": {"\\ud800": 1}}' % SMOL, "format"),
])
def test_lone_surrogates_are_400_with_a_clear_message(srv, path, body, field):
    r = httpx.post(srv.url + path, content=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert message.startswith("invalid JSON body: lone surrogate") and field in message, message
    assert "codec" not in message


def test_encoded_surrogate_bytes_are_not_utf8(srv):
    r = httpx.post(srv.url + "/api/generate", content=b'{"model": "smollm2:135m", "prompt": "\xed\xa0\x80"}')
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]


def test_surrogate_pairs_are_fine(srv):
    r = httpx.post(srv.url + "/api/generate", timeout=60, content=(
        '{"model": "%s", "prompt": "smile \\ud83d\\ude00", "stream": false, "options": {"num_predict": 1}}' % SMOL))
    assert r.status_code == 200, r.text


def test_docs_open_without_a_key_on_loopback(srv):
    assert httpx.get(srv.url + "/openapi.json").status_code == 200
    assert httpx.get(srv.url + "/docs").status_code == 200


def test_docs_behind_the_key_when_one_is_set(start_server):
    server = start_server(CORRAL_API_KEY="k3y")
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(server.url + path).status_code == 401
    ok = httpx.get(server.url + "/openapi.json", headers={"Authorization": "Bearer k3y"})
    assert ok.status_code == 200 and ok.json()["openapi"]
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["message"]  # OpenAI-shaped under /v1


def test_server_survived(srv):
    assert srv.proc.poll() is None and httpx.get(srv.url + "/").status_code == 200
