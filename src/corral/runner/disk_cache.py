"""Warm reloads: a runner's hottest prompt-cache states, kept on disk while its model is unloaded.

When a runner stops (keep-alive expiry, eviction, `keep_alive: 0`, server shutdown), the states
most worth keeping (prefixes shared by many saved sequences, such as a system prompt, then the
most used ones) are written under CORRAL_CACHE_DIR; the next runner of the same model with the
same KV-shaping load options reads them back into its prompt cache before it says it is ready,
so the first request after a reload does not recompute them. A killed runner writes nothing.

Each file: MAGIC, one JSON header line (key, tokens, sha256 and length of the state, uses),
then the state's bytes. A file is written beside its final name and renamed, so a reader never
sees half of one; one whose key, length or checksum is not right is skipped (and removed),
never restored. Names are built here from hex digests only and matched against NAME on reading.
The directory is bounded in bytes: the least recently written or restored files go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from corral.runner.prompt_cache import MIN_TOKENS, Entry, PromptCache, State, common_prefix
from corral.runner.protocol import LoadConfig

FORMAT = 1
MAGIC = b"corral-kv 1\n"
NAME = re.compile(r"^([0-9a-f]{24})-([0-9a-f]{40})\.kv$")
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 600.0  # a temporary this old was left by a runner that was killed while writing
MAX_HEADER = 1 << 22  # tokens as JSON: far more than any context
# Written at one unload, at most: the server gives a stopping runner seconds, not minutes.
UNLOAD_BYTES = 64 << 20
SHARED_SCAN = 64  # the most recent entries searched for shared prefixes (pairwise)
_BLOB = re.compile(r"^sha256-([0-9a-f]{64})$")
# Load options that do not change a sequence's KV bytes. Every other field (and any field added
# later: a KV type, an engine mode) is part of the key, so a file is never restored into a
# runner that would have computed other numbers. A per-slot context of another size still
# takes a state (a sequence's KV does not depend on it) if its tokens fit.
NOT_KV = frozenset({"model_path", "n_slots", "n_ctx_slot", "n_threads", "main_gpu", "prompt_cache_bytes",
                    "max_step_s", "cache_dir", "cache_dir_bytes"})


def cache_key(cfg: LoadConfig, engine_version: str) -> str | None:
    """What a file must be made with to be restored here: the model's digest, the load options
    that shape the KV, the llama.cpp build. None for a model file that is not a store blob."""
    match = _BLOB.match(Path(cfg.model_path).name)
    if match is None:
        return None
    shaping = {k: v for k, v in asdict(cfg).items() if k not in NOT_KV}
    text = json.dumps({"format": FORMAT, "model": match.group(1), "engine": engine_version, **shaping},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Pick:
    """A state to write: the first `n` tokens of an entry, weighted by how many saved sequences
    (and their restores) begin with them."""

    entry: Entry
    n: int
    weight: int


def pick(entries: list[Entry], budget: int) -> list[Pick]:
    """What to keep, hottest first, within `budget` bytes (sizes prorated by tokens).

    Candidates are each entry whole and the longest prefix it shares with another entry: many
    conversations on one system prompt share that prompt, which then weighs as all of them.
    Writing is what an unload waits for, so a conversation seen once whose prefix is kept is
    left out (only its own tail would be new)."""
    recent = entries[-SHARED_SCAN:]
    candidates: dict[tuple[int, ...], Entry] = {e.tokens: e for e in recent}
    for i, a in enumerate(recent):
        shared = max((common_prefix(a.tokens, b.tokens) for j, b in enumerate(recent) if j != i), default=0)
        if MIN_TOKENS <= shared < len(a.tokens):
            candidates.setdefault(a.tokens[:shared], a)
    picks = sorted((Pick(e, len(t), sum(1 + o.uses for o in recent if o.tokens[:len(t)] == t))
                    for t, e in candidates.items()), key=lambda c: (-c.weight, -c.n))
    chosen: list[Pick] = []
    for c in picks:
        size = len(c.entry.data) * c.n // len(c.entry.tokens)
        if size > budget or any(k.n >= c.n and k.entry.tokens[:c.n] == c.entry.tokens[:c.n] for k in chosen):
            continue  # too big, or what a chosen state holds already
        if c.weight == 1 and any(k.n < c.n and c.entry.tokens[:k.n] == k.entry.tokens[:k.n] for k in chosen):
            continue  # one conversation, seen once, on a prefix kept already: only its tail is new
        chosen.append(c)
        budget -= size
    return chosen


def log(message: str) -> None:
    # The runner's stderr: the server keeps its last lines for a load error's message.
    print(f"corral runner: prompt cache on disk: {message}", file=sys.stderr, flush=True)


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int, key: str) -> None:
        self.dir, self.max_bytes, self.key = directory, max_bytes, key

    @classmethod
    def open(cls, cfg: LoadConfig, engine_version: str) -> DiskCache | None:
        """The cache for this runner, or None when off (no directory, no bytes, not a store blob)."""
        key = cache_key(cfg, engine_version)
        if not cfg.cache_dir or cfg.cache_dir_bytes <= 0 or cfg.prompt_cache_bytes <= 0 or key is None:
            return None
        return cls(Path(cfg.cache_dir), cfg.cache_dir_bytes, key)

    def _name(self, tokens: tuple[int, ...]) -> str:
        digest = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()
        return f"{self.key[:24]}-{digest[:40]}.kv"

    def _files(self) -> list[Path]:
        try:
            return [self.dir / n for n in os.listdir(self.dir) if NAME.match(n)]
        except OSError:
            return []

    # -- reading -------------------------------------------------------------------------------
    def restore(self, cache: PromptCache, max_tokens: int) -> int:
        """Read this key's files into the prompt cache, most recently used first, as long as they
        fit it; the number restored. A bad file is removed and logged, never raised."""
        mine = []
        for path in self._files():
            if path.name.startswith(self.key[:24]):
                try:
                    mine.append((path.stat().st_mtime, path))
                except OSError:
                    continue
        mine.sort(reverse=True)
        loaded: list[tuple[Path, Entry]] = []
        room = cache.capacity
        for _, path in mine:
            try:
                entry = self._read(path, max_tokens, room)
            except (OSError, ValueError) as exc:
                log(f"skipped {path.name}: {exc}")
                _unlink(path)
                continue
            if entry is not None:
                loaded.append((path, entry))
                room -= len(entry.data)
        restored = 0
        for path, entry in reversed(loaded):  # the hottest is added last: the most recent
            if cache.add(entry):
                restored += 1
                _touch(path)
        return restored

    def _read(self, path: Path, max_tokens: int, room: int) -> Entry | None:
        """The entry a file holds; None if it does not fit (not an error); ValueError if bad."""
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a corral prompt-cache file")
            line = f.readline(MAX_HEADER)
            try:
                header = json.loads(line)
            except ValueError:
                raise ValueError("bad header") from None
            if not isinstance(header, dict) or header.get("key") != self.key:
                raise ValueError("made for another model or other load options")
            tokens, size, uses = header.get("tokens"), header.get("size"), header.get("uses", 0)
            if (not isinstance(tokens, list) or not all(type(t) is int and t >= 0 for t in tokens)
                    or type(size) is not int or type(uses) is not int or size <= 0):
                raise ValueError("bad header")
            if len(tokens) > max_tokens or size > room:
                return None
            data = bytearray(f.read(size + 1))
        if len(data) != size:
            raise ValueError(f"{len(data)} bytes of state, the header says {size}")
        if hashlib.sha256(data).hexdigest() != header.get("sha256"):
            raise ValueError("checksum mismatch")
        return Entry(tuple(tokens), data, max(uses, 0))

    # -- writing -------------------------------------------------------------------------------
    def save(self, cache: PromptCache, scratch: int) -> int:
        """Write the hottest states (pick()) within the byte bound, then trim the directory to
        it; the number written. `scratch` is an empty sequence to cut prefixes in."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log(f"cannot create {self.dir}: {exc}")
            return 0
        written: list[Path] = []
        for c in pick(cache.entries(), min(self.max_bytes, cache.capacity, UNLOAD_BYTES)):
            tokens = c.entry.tokens[:c.n]
            data = c.entry.data if c.n == len(c.entry.tokens) else cache.prefix_state(c.entry, c.n, scratch)
            if data is None:
                continue
            path = self.dir / self._name(tokens)
            try:
                if not path.exists():
                    self._write(path, tokens, data, c.weight - 1)  # as uses: a lone entry keeps its own
                written.append(path)
            except OSError as exc:
                log(f"cannot write {path.name}: {exc}")
                break  # a full disk stays full
        # Hottest written first (a kill mid-way loses the coldest), then dated hottest newest,
        # so the bound drops the coldest first.
        now = time.time()
        for rank, path in enumerate(written):
            _touch(path, now - rank * 1e-3)
        self.trim()
        return len(written)

    def _write(self, path: Path, tokens: tuple[int, ...], data: State, uses: int) -> None:
        header = {"key": self.key, "tokens": list(tokens), "size": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(), "uses": uses}
        tmp = self.dir / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        try:
            with open(tmp, "xb") as f:
                f.write(MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n")
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            _unlink(tmp)
            raise

    def trim(self) -> None:
        """Keep the directory within its byte bound (all models' files): least recently used
        first out. Temporaries left by killed runners go too."""
        files = []
        now = time.time()
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            path = self.dir / name
            try:
                st = path.stat()
            except OSError:
                continue
            if NAME.match(name):
                files.append((st.st_mtime, st.st_size, path))
            elif name.startswith(TEMP_PREFIX) and now - st.st_mtime > STALE_TEMP_S:
                _unlink(path)
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            _unlink(path)
            total -= size


def _touch(path: Path, when: float | None = None) -> None:
    try:
        os.utime(path, None if when is None else (when, when))
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass

