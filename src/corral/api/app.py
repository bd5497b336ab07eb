"""The FastAPI app: routes, JSON errors with the right status, a body-size cap, lifespan."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__
from corral.api import anthropic, create, events, metrics, models, ollama, openai, responses, ui
from corral.api.context import AppContext
from corral.api.keys import Keys
from corral.api.schemas import body_problem
from corral.api.security import BodyTimeout, OriginHostGuard, add_cors, is_loopback
from corral.api.tenancy import Tenancy
from corral.config import Settings
from corral.errors import CorralError

log = logging.getLogger("corral.api")

E = TypeVar("E", bound=Exception)


def _error(status: int, message: str, headers: dict | None = None, path: str = "") -> JSONResponse:
    """Ollama's {"error": "..."}; under /v1/, OpenAI's error object (Anthropic's under /v1/messages)."""
    if anthropic.is_anthropic_path(path):
        body = anthropic.anthropic_error(status, message)
    else:
        body = openai.openai_error(status, message) if path.startswith("/v1/") else {"error": message}
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(status: int, message: str, path: str, headers: dict | None = None) -> JSONResponse:
    """The error reply a path's API family expects, for callers outside the app (the cluster's ingress and nodes)."""
    return _error(status, message, headers, path)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"invalid JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}"
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


class RequestGuard:
    """Reads the whole body before the route runs (bodies are capped, so this is bounded), to
    cap it (413, whether or not Content-Length is honest) and to refuse what Python's json
    takes but JSON does not: NaN, 1e309, lone surrogates (schemas.body_problem, 400). Every body
    is then read as JSON whatever its Content-Type, as Ollama does (curl -d sends a form type)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/blobs/"):
            return await self.app(scope, receive, send)  # blobs stream to disk, hashed, uncapped
        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
        scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        too_large = _error(413, f"request body exceeds {self.limit} bytes", path=scope["path"])
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left, or stalled (BodyTimeout answers), before the body ended
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        if problem := body_problem(bytes(body)):
            return await _error(400, problem, path=scope["path"])(scope, receive, send)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # a streaming reply's disconnect listener
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    ctx = AppContext.create(settings)
    keys = Keys(settings.keys_file, settings.api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # SIGHUP reads the keys file again (only where the app runs in the main thread)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keys.reload)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        preload = asyncio.ensure_future(ctx.preload())
        yield
        preload.cancel()
        await ctx.scheduler.close()

    app = FastAPI(title="corral", version=__version__, lifespan=lifespan)
    app.state.corral = ctx
    app.include_router(ollama.router)
    app.include_router(models.router)
    app.include_router(create.router)
    app.include_router(openai.router)
    app.include_router(responses.router)
    app.include_router(anthropic.router)
    app.include_router(metrics.router)
    app.include_router(events.router)
    app.include_router(ui.router)

    add_error_handlers(app)
    add_guards(app, settings, keys)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON with its status, in the shape of the API family its path belongs to."""
    def handle(exc_type: type[E], status: int, message: Callable[[E], str] = str,
               headers: dict | None = None) -> None:
        async def handler(request: Request, exc: E) -> JSONResponse:
            return _error(status, message(exc), headers, request.url.path)
        # Starlette types every handler as taking any Exception; it calls one only with its own class.
        app.add_exception_handler(exc_type, handler)  # type: ignore[arg-type]

    handle(RequestValidationError, 400, _validation_message)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, undecodable bodies: still {"error": ...}, not {"detail": ...}.
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request.url.path)
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]  # as in handle()
    async def corral_error(request: Request, exc: CorralError) -> JSONResponse:
        # The one place a status is decided: each error carries its own (corral/errors.py).
        return _error(exc.status, str(exc), exc.headers or None, request.url.path)
    app.add_exception_handler(CorralError, corral_error)  # type: ignore[arg-type]  # as in handle()
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", None, request.url.path)
    app.add_exception_handler(Exception, internal)


def add_guards(app: FastAPI, settings: Settings, keys: Keys | None = None) -> None:
    """corral's request guards (also the cluster ingress's): Origin/Host, CORS, API keys, body
    deadline, body cap."""
    # Last added runs first. The Origin/Host rule goes before everything; CORS next, so
    # preflights and every later error carry CORS headers.
    app.add_middleware(RequestGuard, limit=settings.max_body_bytes)
    app.add_middleware(BodyTimeout, timeout=settings.body_timeout, error=_error)
    if keys is not None:
        app.add_middleware(Tenancy, keys=keys, error=_error)
    add_cors(app, settings.origins)
    app.add_middleware(OriginHostGuard, origins=settings.origins, check_host=is_loopback(settings.host),
                       error=_error)
