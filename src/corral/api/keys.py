"""API keys and the tenants they stand for: CORRAL_KEYS_FILE (TOML or JSON) and CORRAL_API_KEY.

    [keys.sk-alice-1]            # JSON: {"keys": {"sk-alice-1": {"tenant": "alice", ...}}}
    tenant = "alice"
    weight = 3                   # share of slots within a lane (default 1)
    max_running = 4              # requests holding a slot at once (default 0: no limit)
    max_queued = 20              # requests waiting at once, beyond it 429 (default 0: no limit)
    models = ["smollm2:135m"]    # models it may use (default: all)
    priority = "batch"           # lane when a request names none (default interactive)
    max_priority = "interactive" # most urgent lane it may ask for (default interactive)

Keys of one tenant share its limits and share, so they must agree on them. The file is read
again when its modification time changes (looked at most once a second) or on SIGHUP; a file
that no longer parses leaves the previous keys in force. The single CORRAL_API_KEY stays a key
of its own, for the tenant "default". No key is ever logged or put in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.models.names import ModelName
from corral.scheduler.tenants import ANONYMOUS, Lane, Tenant

log = logging.getLogger("corral.keys")

_FIELDS = {"tenant", "weight", "max_running", "max_queued", "models", "priority", "max_priority"}
CHECK_EVERY_S = 1.0


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names entries by position, never by key."""


def _digest(key: bytes) -> bytes:
    # Compared as digests, so the time a comparison takes does not depend on the key's length either.
    return hashlib.sha256(key).digest()


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys (as digests) and their tenants."""

    entries: tuple[tuple[bytes, Tenant], ...] = ()

    def lookup(self, offered: Sequence[bytes]) -> Tenant | None:
        """The tenant of the first offered key that is known, or None. Every offered key is
        compared with every known one, without stopping at a match, so the time taken does not
        say which key matched or how many were tried."""
        found: Tenant | None = None
        for token in offered:
            wanted = _digest(token)
            for digest, tenant in self.entries:
                if hmac.compare_digest(wanted, digest) and found is None:
                    found = tenant
        return found


def _model(name: object, where: str) -> str:
    if not isinstance(name, str):
        raise KeysFileError(f"{where}: models must be a list of model names")
    try:
        return ModelName.parse(name).short.lower()
    except ValueError as exc:
        raise KeysFileError(f"{where}: invalid model name {name!r}: {exc}") from None


def _count(entry: dict[str, Any], field: str, where: str) -> int:
    value = entry.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeysFileError(f"{where}: {field} must be a whole number, 0 or more")
    return value


def _tenant(entry: object, where: str) -> Tenant:
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where}: expected a table of settings")
    if unknown := set(entry) - _FIELDS:
        raise KeysFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = entry.get("tenant")
    if not isinstance(name, str) or not name.strip():
        raise KeysFileError(f"{where}: tenant must be a non-empty name")
    weight = entry.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        raise KeysFileError(f"{where}: weight must be a number above 0")
    models = entry.get("models")
    if models is not None and not isinstance(models, list):
        raise KeysFileError(f"{where}: models must be a list of model names")
    lanes = {}
    for field in ("priority", "max_priority"):
        value = entry.get(field, Lane.INTERACTIVE.value)
        if not isinstance(value, str) or value not in {lane.value for lane in Lane}:
            raise KeysFileError(f"{where}: {field} must be interactive or batch")
        lanes[field] = Lane(value)
    return Tenant(name.strip(), weight=float(weight), max_running=_count(entry, "max_running", where),
                  max_queued=_count(entry, "max_queued", where),
                  models=None if models is None else frozenset(_model(m, where) for m in models),
                  priority=lanes["priority"], max_priority=lanes["max_priority"])


def parse_keys(text: str) -> KeyRing:
    """A keys file's text (JSON when it starts with '{', else TOML) → its KeyRing."""
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise KeysFileError(f"not valid TOML or JSON: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict) or set(data) != {"keys"}:
        raise KeysFileError('expected one table "keys": key → its tenant\'s settings')
    entries = []
    by_name: dict[str, Tenant] = {}
    for i, (key, entry) in enumerate(keys.items(), 1):
        where = f"key #{i}"
        if not key.strip() or key != key.strip():
            raise KeysFileError(f"{where}: a key must be non-empty, without surrounding spaces")
        tenant = _tenant(entry, f"{where} (tenant {entry.get('tenant')!r})" if isinstance(entry, dict) else where)
        if by_name.setdefault(tenant.name, tenant) != tenant:
            raise KeysFileError(f"{where}: tenant {tenant.name!r} has other settings under another key")
        entries.append((_digest(key.encode()), tenant))
    return KeyRing(tuple(entries))


class Keys:
    """The keys in force: the keys file's (kept fresh) and the single CORRAL_API_KEY."""

    def __init__(self, path: Path | None, single_key: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.clock = path, clock
        self._single = ((_digest(single_key.encode()), ANONYMOUS),) if single_key else ()
        self._ring = KeyRing(self._single)
        self._mtime: int | None = None
        self._checked = float("-inf")
        if path is not None:
            self._load(strict=True)

    @property
    def required(self) -> bool:
        """Whether requests need a key (a keys file or a single key is configured)."""
        return self.path is not None or bool(self._single)

    def lookup(self, offered: Sequence[bytes]) -> Tenant | None:
        now = self.clock()
        if self.path is not None and now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            try:
                changed = self.path.stat().st_mtime_ns != self._mtime
            except OSError:
                changed = self._mtime is not None
            if changed:
                self._load(strict=False)
        return self._ring.lookup(offered)

    def reload(self) -> None:
        """Read the keys file now (SIGHUP)."""
        if self.path is not None:
            self._load(strict=False)

    def _load(self, strict: bool) -> None:
        """Read the file; at start (`strict`) a bad file is an error, later it keeps the old keys."""
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime_ns
            ring = parse_keys(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, KeysFileError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            if strict:
                raise KeysFileError(f"keys file {self.path}: {reason}") from None
            log.error("keys file %s not reloaded, the previous keys stay in force: %s", self.path, reason)
            try:
                self._mtime = self.path.stat().st_mtime_ns  # do not retry until it changes again
            except OSError:
                self._mtime = None
            return
        self._mtime = mtime
        self._ring = KeyRing(ring.entries + self._single)
        log.info("keys file %s loaded: %d keys, %d tenants", self.path, len(ring.entries),
                 len({t.name for _, t in ring.entries}))
