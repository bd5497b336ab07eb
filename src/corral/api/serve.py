"""Run the app under uvicorn with a draining shutdown: on SIGTERM/SIGINT new requests get 503,
admitted ones finish (up to CORRAL_SHUTDOWN_TIMEOUT), then every runner process is stopped.

Slow clients are bounded here, at the connection: uvicorn closes idle keep-alive connections
(timeout_keep_alive) but has no deadline for a request's headers, so a client sending half a
request line held its connection forever (slowloris). `_GuardedH11` adds that deadline and a cap
on open connections. The deadline between body pieces is in the app (security.BodyTimeout).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral.api.app import create_app
from corral.config import Settings

if TYPE_CHECKING:
    from corral.scheduler.scheduler import Scheduler

log = logging.getLogger("corral.serve")

KEEP_ALIVE_S = 5  # uvicorn's default, stated: an idle keep-alive connection is closed after it


def _raw_response(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


def guarded_protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a connection cap (uvicorn's own
    limit_concurrency answers plain-text 503s to requests but still accepts every socket, so a
    flood could run the process out of file descriptors, and runners need pipes)."""

    class _GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_in: Any = None  # the request cycle that was current when the deadline was set
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                # Refuse at once rather than hold a socket. The close waits a second, reading and
                # dropping input meanwhile: closing with unread input sends a reset, which can
                # destroy the 503 before the client reads it.
                self._refused = True
                self.connections.discard(self)
                transport.write(_raw_response("503 Service Unavailable",
                                              f"too many connections (CORRAL_MAX_CONNECTIONS={max_connections})"))
                if transport.can_write_eof():
                    transport.write_eof()
                self.loop.call_later(1.0, transport.close)
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            # Between requests (none yet, or the last one answered), bytes start a new request:
            # its headers now have header_timeout to arrive. uvicorn's keep-alive timer, which
            # this data just cancelled, only covered a silent connection.
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()
            super().data_received(data)
            if self._deadline is not None and self.cycle is not self._waiting_in:
                self._disarm()  # a new request's headers are complete

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._refused:
                super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._waiting_in = self.cycle
            self._deadline = self.loop.call_later(header_timeout, self._header_timeout)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _header_timeout(self) -> None:
            self._deadline = None
            if self.cycle is not self._waiting_in or self.transport.is_closing():
                return  # headers arrived (a pipelined request starts without data_received)
            if self.conn.our_state in (h11.IDLE, h11.DONE) and self.conn.their_state is not h11.SEND_BODY:
                self.transport.write(_raw_response("408 Request Timeout",
                                                   f"request headers not received within {header_timeout:g} s"))
            self.transport.close()

    return _GuardedH11


def _raise_fd_limit(wanted: int) -> None:
    """Room for max_connections sockets plus the store's files and the runners' pipes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit to %d: %s", target, exc)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.drain()
        super().handle_exit(sig, frame)


def run(app: ASGIApp, settings: Settings, drain: Callable[[], None]) -> None:
    """Serve `app` (corral's, or the cluster ingress's) until SIGTERM/SIGINT, which calls `drain`
    first. The asyncio loop is named: uvicorn would pick uvloop where it is installed (Ray
    brings it), and corral's runners and signals are tested on asyncio's."""
    _raise_fd_limit(settings.max_connections + 1024)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", loop="asyncio",
                            http=guarded_protocol(settings.header_timeout, settings.max_connections),
                            timeout_keep_alive=KEEP_ALIVE_S,
                            timeout_graceful_shutdown=int(settings.shutdown_timeout))
    # What is alive now (modules, the app; in the ingress all of Ray and Serve) lives as long as
    # the process: out of the collector's reach, a full collection scans only what requests made
    # (py-spy found collections in a quarter of the cluster ingress's busy samples; Serve freezes
    # its replicas alike).
    gc.collect()
    gc.freeze()
    _DrainingServer(config, drain).run()


def serve(settings: Settings) -> None:
    app = create_app(settings)
    scheduler: Scheduler = app.state.corral.scheduler
    run(app, settings, scheduler.drain)
