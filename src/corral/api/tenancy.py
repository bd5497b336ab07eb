"""Who is calling: the API key (401 without a known one, when keys are configured) and the
request's own scheduling headers, read before any route runs.

The result, a `Caller`, is put in a context variable for the request's task: `Job` reads it
when it admits the request, so no route has to thread it through. Requests need
`Authorization: Bearer <key>` or `x-api-key: <key>` (the anthropic SDK's header); GET / stays
open as a health check, and the page at /ui too (no data: its event stream needs the key); CORS
preflights pass, so browsers can ask.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.keys import Keys
from corral.api.security import ErrorFactory
from corral.api.ui import is_ui_path
from corral.errors import ClientError
from corral.scheduler.tenants import ANONYMOUS, Lane, Tenant

PRIORITY_HEADER = b"x-corral-priority"
DEADLINE_HEADER = b"x-corral-deadline"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant = ANONYMOUS
    priority: Lane | None = None  # X-Corral-Priority; None: the body's, else the tenant's default
    deadline: float | None = None  # X-Corral-Deadline, as a monotonic time; None: the body's, if any


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


def _priority(raw: bytes | None) -> Lane | None:
    return None if raw is None else Lane.parse(raw.decode("latin-1"), "X-Corral-Priority")


def _deadline(raw: bytes | None) -> float | None:
    return None if raw is None else deadline_in(raw.decode("latin-1"), "X-Corral-Deadline")


def deadline_in(seconds: str | float, where: str) -> float:
    """A deadline `seconds` from now (a finite number above 0) as a monotonic time."""
    try:
        value = float(seconds)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ClientError(f"invalid {where} {seconds!r}: expected seconds from now, a number above 0")
    return time.monotonic() + value


class Tenancy:
    def __init__(self, app: ASGIApp, keys: Keys, error: ErrorFactory) -> None:
        self.app, self.keys, self.error = app, keys, error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or (
                (scope["path"] == "/" or is_ui_path(scope["path"])) and scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        tenant: Tenant | None = ANONYMOUS
        if self.keys.required:
            tenant = self.keys.lookup(_offered(headers))
        if tenant is None:
            response = self.error(401, "unauthorized: missing or wrong API key", {"WWW-Authenticate": "Bearer"},
                                  scope["path"])
            return await response(scope, receive, send)
        try:
            priority = _priority(headers.get(PRIORITY_HEADER))
            deadline = _deadline(headers.get(DEADLINE_HEADER))
        except ClientError as exc:
            return await self.error(exc.status, str(exc), None, scope["path"])(scope, receive, send)
        token = _CALLER.set(Caller(tenant, priority, deadline))
        try:
            await self.app(scope, receive, send)
        finally:
            _CALLER.reset(token)
