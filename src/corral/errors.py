"""corral's errors: each carries the HTTP status it means, decided here and nowhere else.

Every layer raises these (or subclasses named for what went wrong); `api/app.py` has the one
handler that turns them into replies. Anything else that escapes a route is a bug: a logged 500,
never the client's fault.
"""

from __future__ import annotations

from typing import ClassVar


class CorralError(Exception):
    """Something corral reports to the client, with the status that says whose fault it is."""

    status: ClassVar[int] = 500
    headers: ClassVar[dict[str, str]] = {}


class ClientError(CorralError):
    """The request is wrong (a field, an option, a name, a file it names)."""

    status = 400


class Forbidden(CorralError):
    status = 403


class NotFound(CorralError):
    status = 404


class TooLarge(CorralError):
    status = 413


class UpstreamError(CorralError):
    """Another server (a registry) could not be reached or answered wrongly."""

    status = 502


class Unavailable(CorralError):
    """Not now: the queue is full or the server is stopping. Try again shortly."""

    status = 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class TooManyRequests(CorralError):
    """Not now for this caller: its own share (a tenant's queue limit) is used up, while the
    server still serves others (a 503 says the server's limit). Try again shortly."""

    status = 429
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class TimedOut(CorralError):
    """A time limit the request set for itself (its deadline) passed before it could run."""

    status = 504


class InsufficientStorage(CorralError):
    """Memory or disk cannot hold what was asked for."""

    status = 507


class ServerError(CorralError):
    """corral failed (a runner died, a load failed)."""

    status = 500


class RequestFailed(CorralError):
    """A failure reported from elsewhere (a runner) with its own status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # this one's status is the reporter's
