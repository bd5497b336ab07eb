"""Who is calling: the API key (401 without a known one, when keys are configured) and the
request's own scheduling headers, read before any route runs.

The result, a `Caller`, is put in a context variable for the request's task: `Job` reads it
when it admits the request, so no route has to thread it through. Requests need
`Authorization: Bearer <key>` or `x-api-key: <key>` (the anthropic SDK's header); GET / stays
open as a health check and CORS preflights pass, so browsers can ask.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.keys import Keys
from corral.api.security import ErrorFactory
from corral.scheduler.tenants import ANONYMOUS, Lane, Tenant

PRIORITY_HEADER = b"x-corral-priority"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant = ANONYMOUS
    priority: Lane | None = None  # X-Corral-Priority; None: the body's, else the tenant's default


_CALLER: ContextVar[Caller | None] = ContextVar("corral_caller", default=None)


def current_caller() -> Caller:
    """The caller of the request this task serves (anonymous outside one)."""
    return _CALLER.get() or Caller()


def _offered(headers: dict[bytes, bytes]) -> list[bytes]:
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    offered = [token.strip()] if scheme.lower() == b"bearer" else []
    if b"x-api-key" in headers:  # how the anthropic SDK sends an api_key (an auth_token goes as Bearer)
        offered.append(headers[b"x-api-key"].strip())
    return offered


class Tenancy:
    def __init__(self, app: ASGIApp, keys: Keys, error: ErrorFactory) -> None:
        self.app, self.keys, self.error = app, keys, error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or (
                scope["path"] == "/" and scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        tenant: Tenant | None = ANONYMOUS
        if self.keys.required:
            tenant = self.keys.lookup(_offered(headers))
        if tenant is None:
            response = self.error(401, "unauthorized: missing or wrong API key", {"WWW-Authenticate": "Bearer"},
                                  scope["path"])
            return await response(scope, receive, send)
        priority = None
        if PRIORITY_HEADER in headers:
            value = headers[PRIORITY_HEADER].decode("latin-1")
            if value.strip().lower() not in {lane.value for lane in Lane}:
                message = f"invalid X-Corral-Priority {value!r}: expected one of interactive, batch"
                return await self.error(400, message, None, scope["path"])(scope, receive, send)
            priority = Lane(value.strip().lower())
        token = _CALLER.set(Caller(tenant, priority))
        try:
            await self.app(scope, receive, send)
        finally:
            _CALLER.reset(token)
