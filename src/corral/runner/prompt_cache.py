"""A host-memory cache of sequences' KV state, so a prompt seen before skips its prefill.

A slot keeps its last request's KV on the device, but with many clients that slot is soon
reused. Every finished sequence is also saved here (llama_state_seq_get_data); a new request
whose prompt shares a longer prefix with a saved state than with any free slot gets that state
restored into its slot. This is what makes a multi-turn conversation cheap when other clients
run in between. The restored bytes are the very numbers computed before, so output is exact.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp as ll
import numpy as np

MIN_TOKENS = 16  # shorter sequences are cheaper to recompute than to copy

# A saved state's bytes: llama.cpp writes them in place and reads them back in place (no copies).
# A new one is a view of an uninitialised numpy buffer: zeroing megabytes that the copy overwrites
# at once cost as much as the copy out of VRAM itself (docs/GPU.md, the eighth session's profile).
State = bytearray | memoryview


@dataclass(slots=True)
class Entry:
    tokens: tuple[int, ...]
    data: State
    uses: int = 0  # times restored into a slot: what makes an entry worth keeping on disk


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCache:
    def __init__(self, ctx: ll.llama_context_p, capacity_bytes: int) -> None:
        self.ctx = ctx
        self.capacity = capacity_bytes
        self.size = 0
        self._entries: OrderedDict[tuple[int, ...], Entry] = OrderedDict()  # least recently used first

    def save(self, seq: int, tokens: list[int]) -> None:
        if self.capacity <= 0 or len(tokens) < MIN_TOKENS:
            return
        key = tuple(tokens)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        n = ll.llama_state_seq_get_size(self.ctx, seq)
        if n <= 0 or n > self.capacity:
            return
        data = self._state(seq, n)
        if data is not None:
            self.add(Entry(key, data))

    def add(self, entry: Entry) -> bool:
        """Keep a state (a finished sequence's, or one read back from disk) as the most recent."""
        key = entry.tokens
        if key in self._entries or not 0 < len(entry.data) <= self.capacity:
            return False
        # A saved prefix of this sequence is now redundant.
        for old in [k for k in self._entries if len(k) < len(key) and key[:len(k)] == k]:
            entry.uses += self._entries[old].uses
            self._drop(old)
        self._entries[key] = entry
        self.size += len(entry.data)
        while self.size > self.capacity and self._entries:
            self._drop(next(iter(self._entries)))
        return key in self._entries

    def entries(self) -> list[Entry]:
        """Least recently used first."""
        return list(self._entries.values())

    def prefix_state(self, entry: Entry, n: int, scratch: int) -> State | None:
        """The state of the first n tokens of an entry, built in sequence `scratch` (which must
        be empty, and is empty again after): how a system prompt shared by many saved
        conversations is kept once, without their different tails."""
        if not self.restore(entry, scratch, count=False):
            return None
        memory = ll.llama_get_memory(self.ctx)
        try:
            ll.llama_memory_seq_rm(memory, scratch, n, -1)
            return self._state(scratch, ll.llama_state_seq_get_size(self.ctx, scratch))
        finally:
            ll.llama_memory_seq_rm(memory, scratch, -1, -1)

    def _state(self, seq: int, n: int) -> State | None:
        if n <= 0:
            return None
        data = np.empty(n, np.uint8).data
        written = ll.llama_state_seq_get_data(self.ctx, (ctypes.c_uint8 * n).from_buffer(data), n, seq)
        if written <= 0:
            return None
        return data[:written] if written < n else data

    def best(self, tokens: list[int]) -> tuple[Entry | None, int]:
        best, best_len = None, 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens, tokens)
            if n > best_len:
                best, best_len = entry, n
        return best, best_len

    def restore(self, entry: Entry, seq: int, count: bool = True) -> bool:
        """Load a saved state into `seq` (which must be empty)."""
        n = len(entry.data)
        ok = ll.llama_state_seq_set_data(self.ctx, (ctypes.c_uint8 * n).from_buffer(entry.data), n, seq) > 0
        if ok and count and entry.tokens in self._entries:
            entry.uses += 1
            self._entries.move_to_end(entry.tokens)
        return ok

    def _drop(self, key: tuple[int, ...]) -> None:
        self.size -= len(self._entries.pop(key).data)
