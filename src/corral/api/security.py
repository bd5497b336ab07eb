"""Exposure controls, all pure ASGI and all run before a route does any work:

- the Origin and Host rules that stop web pages from driving the API (as Ollama does),
- CORS for the origins those rules allow (one rule, shared),
- a deadline between two pieces of a request body (CORRAL_BODY_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable

import psutil
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# (status, message, headers, path) -> a JSON error response, OpenAI-shaped under /v1 (app._error).
ErrorFactory = Callable[[int, str, "dict | None", str], Response]

# Ollama's defaults (envconfig.AllowedOrigins): localhost, 127.0.0.1 and 0.0.0.0 over http(s) on any
# port, and the schemes of desktop shells and editors; [::1] too, the same machine by another name.
_LOCAL_ORIGINS = r"https?://(?:localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(?::\d+)?"
_APP_SCHEMES = r"(?:app|file|tauri|vscode-webview|vscode-file)://.*"


def _glob(origin: str) -> str:
    return ".*".join(re.escape(part) for part in origin.split("*"))


def origin_regex(extra: tuple[str, ...]) -> str:
    """The allowed origins as one regex (case-insensitive, whole string): the CORS headers and
    the 403 rule both use it, so they cannot disagree. `extra` is OLLAMA_ORIGINS (`*` globs)."""
    return "(?i)(?:" + "|".join([_LOCAL_ORIGINS, _APP_SCHEMES] + [_glob(o) for o in extra]) + ")"


def add_cors(app: FastAPI, origins: tuple[str, ...]) -> None:
    app.add_middleware(CORSMiddleware, allow_origin_regex=origin_regex(origins),
                       allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"], allow_headers=["*"])


def is_loopback(host: str) -> bool:
    """Whether a bind address only takes connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_host(header: str) -> str:
    """The name or address in a Host header, without port or brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header  # no port, or a bare IPv6 address


def _local_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(addr.address.split("%")[0] == str(ip)
               for addrs in psutil.net_if_addrs().values() for addr in addrs
               if addr.family in (socket.AF_INET, socket.AF_INET6))


def allowed_host(header: str) -> bool:
    """Ollama's allowedHost rule for a server bound to loopback. A DNS-rebinding page reaches
    the loopback socket under its own name (Host: evil.example), so only names of this machine
    pass: localhost and *.localhost, the hostname, *.local and *.internal; and addresses that
    are loopback, private, unspecified or one of this machine's (no name to rebind)."""
    host = _split_host(header)
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified or _local_address(ip)


class OriginHostGuard:
    """403 before any work for a request from a web page whose origin is not allowed, and, when
    bound to loopback, for a Host that is not a name or address of this machine.

    CORS alone only hides the answer: a cross-origin POST sent as text/plain needs no preflight,
    and corral reads every body as JSON, so the request would run. Browsers send Origin on every
    cross-origin request; curl and SDKs send none and pass. A page from the server's own origin
    (Origin equal to scheme://Host) passes too, as in Ollama's CORS middleware."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...], check_host: bool, error: ErrorFactory) -> None:
        self.app, self.check_host, self.error = app, check_host, error
        self.allowed_origin = re.compile(origin_regex(origins)).fullmatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        reason = None
        if self.check_host and not allowed_host(host):
            reason = f"forbidden: Host {host!r} is not this machine (corral is bound to loopback)"
        elif origin is not None:
            text = origin.decode("latin-1")
            if not (self.allowed_origin(text) or text.lower() in (f"http://{host}".lower(), f"https://{host}".lower())):
                reason = f"forbidden: origin {text!r} is not allowed (add it to OLLAMA_ORIGINS)"
        if reason:
            return await self.error(403, reason, None, scope["path"])(scope, receive, send)
        await self.app(scope, receive, send)


class BodyTimeout:
    """A client that stops sending its body for `timeout` seconds (a chunked body that never
    ends, a Content-Length never reached) gets 408 and its connection closed, instead of holding
    a connection and a task forever. Only the wait for body pieces is timed: once the body is
    complete, receive() is the disconnect listener of a streaming reply and may wait for minutes.

    The app is told the client is gone (http.disconnect), so it stops; whatever it answers to
    that is dropped, and the 408 goes out instead. If a reply had already started, the
    connection is closed (by raising, which makes uvicorn close it)."""

    def __init__(self, app: ASGIApp, timeout: float, error: ErrorFactory) -> None:
        self.app, self.timeout, self.error = app, timeout, error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_done = timed_out = started = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                timed_out = body_done = True
                return {"type": "http.disconnect"}
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise  # otherwise it is the app's reaction to the disconnect made up above
        if timed_out:
            if started:
                raise BodyTimedOut(f"no request body data for {self.timeout:g} s after the reply started")
            response = self.error(408, f"request body not received: nothing arrived for {self.timeout:g} s",
                                  {"Connection": "close"}, scope["path"])
            await response(scope, receive, send)


class BodyTimedOut(Exception):
    pass
