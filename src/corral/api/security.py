"""Exposure controls: CORS as Ollama does it, and an optional bearer token."""

from __future__ import annotations

import hmac
import re

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Ollama allows these origins on any port besides OLLAMA_ORIGINS.
_LOCAL_ORIGINS = r"(https?://(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?)"
_APP_SCHEMES = r"((app|file|tauri|vscode-webview)://.*)"


def _glob(origin: str) -> str:
    return ".*".join(re.escape(part) for part in origin.split("*"))


def add_cors(app: FastAPI, origins: tuple[str, ...]) -> None:
    patterns = [_LOCAL_ORIGINS, _APP_SCHEMES] + [_glob(o) for o in origins]
    app.add_middleware(CORSMiddleware, allow_origin_regex="^(" + "|".join(patterns) + ")$",
                       allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"], allow_headers=["*"])


class BearerAuth:
    """With CORRAL_API_KEY set, requests need `Authorization: Bearer <key>` (GET / stays open
    as a health check; CORS preflights pass so browsers can ask)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or (
                scope["path"] == "/" and scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            response = JSONResponse({"error": "unauthorized: missing or wrong API key"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
