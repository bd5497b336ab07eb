"""What crosses the hop between the cluster's ingress and a node: the raw HTTP request, and the
reply as its start (status, headers) and body pieces. Plain frozen values, so Ray pickles them
cheaply; nothing here knows about Ray or about any API family."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Routes that name a model in the path, not the body: OpenAI's GET /v1/models/{model}.
_MODEL_PATHS = ("/v1/models/",)
# Where the routes read their model from, in the order they read it: `model` everywhere; `name`
# is the older spelling of show/delete/pull/push/create; copy names its `source` (the model that
# must exist on the node that serves it).
_MODEL_FIELDS = ("model", "name", "source")


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One HTTP request as the ingress received it, body complete (corral caps bodies)."""

    method: str
    path: str  # decoded, as the ASGI scope's `path`
    query: bytes  # the raw query string, without '?'
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client: str = "127.0.0.1"

    @classmethod
    def of(cls, scope: Mapping[str, Any], body: bytes) -> ProxyRequest:
        """From the ingress's own ASGI http scope and the body it read."""
        client = scope.get("client") or ("127.0.0.1", 0)
        return cls(method=scope["method"], path=scope["path"], query=scope.get("query_string", b""),
                   headers=tuple((bytes(k), bytes(v)) for k, v in scope.get("headers", ())), body=body,
                   client=str(client[0]))

    def model(self) -> str | None:
        """The model this request is about, as the route will read it; None when it names none
        (or the body is not a JSON object): such a request may go to any node."""
        for prefix in _MODEL_PATHS:
            if self.path.startswith(prefix) and len(self.path) > len(prefix):
                return self.path[len(prefix):]
        if not self.body:
            return None
        try:
            obj = json.loads(self.body)
        except (ValueError, RecursionError):  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
            return None
        if not isinstance(obj, dict):
            return None
        for field in _MODEL_FIELDS:
            value = obj.get(field)
            if isinstance(value, str) and value.strip():
                return value
        return None

    def header(self, name: str) -> bytes | None:
        """The first value of a header (names compare ignoring case)."""
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Head:
    """The reply's start: `http.response.start`."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]

    def header(self, name: str) -> bytes | None:
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Body:
    """One `http.response.body`: `more` is False on the last piece."""

    data: bytes
    more: bool


Part = Head | Body


def _header(headers: Iterable[tuple[bytes, bytes]], name: str) -> bytes | None:
    wanted = name.lower().encode("latin-1")
    return next((v for k, v in headers if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class End:
    """A stream's last item on the multiplexed hop: the reply ended (error None), or the app failed
    after its reply had started (the ingress then ends the client's stream as for a lost node)."""

    error: str | None = None


Item = Head | Body | End


@dataclass(frozen=True, slots=True)
class Started:
    """A node's answer to `start`: the reply's first items (its Head first), and the node replica
    holding the rest (a replica that Serve replaces on the same machine keeps the node's name but
    has a new instance, and its own pump)."""

    instance: str
    items: tuple[Item, ...]
