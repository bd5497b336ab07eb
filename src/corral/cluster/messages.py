"""TEMPORARY stand-in for branch `parts`' messages.py (dropped at the merge): what crosses the Ray hop."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client: str = "127.0.0.1"

    def model(self) -> str | None:
        try:
            obj = json.loads(self.body) if self.body else None
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        value = obj.get("model") or obj.get("name")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    more: bool


Part = Head | Body
