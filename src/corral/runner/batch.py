"""The engine's llama_batch over numpy buffers it owns, and a fast view of a batch entry's logits."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as ll
import numpy as np

from corral.runner.pieces import Kind, Piece


@dataclass(frozen=True)
class DecodeBatch:
    """A llama_batch of capacity n whose arrays are numpy buffers: filling a prompt chunk is a
    slice assignment rather than a ctypes write per token. Every entry has one sequence id."""

    c: ll.llama_batch
    tok: np.ndarray
    pos: np.ndarray
    seq: np.ndarray
    logits: np.ndarray
    _n_seq: np.ndarray  # held: the C struct points into these
    _seq_ptrs: ctypes.Array

    @classmethod
    def make(cls, n: int) -> DecodeBatch:
        tok, pos, seq = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32)
        n_seq, logits = np.ones(n, np.int32), np.zeros(n, np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = seq.ctypes.data
        seq_ptrs = (i32p * n)(*(ctypes.cast(base + 4 * i, i32p) for i in range(n)))
        batch = ll.llama_batch()
        # llama-cpp-python annotates these fields as arrays; they are pointers (its _fields_ say
        # POINTER), and a pointer (or NULL) is what llama_decode reads there.
        batch.token = tok.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.embd = None  # type: ignore[assignment]
        batch.pos = pos.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.n_seq_id = n_seq.ctypes.data_as(i32p)  # type: ignore[assignment]
        batch.seq_id = ctypes.cast(seq_ptrs, ctypes.POINTER(i32p))  # type: ignore[assignment]
        batch.logits = logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))  # type: ignore[assignment]
        return cls(batch, tok, pos, seq, logits, n_seq, seq_ptrs)

    def lay(self, pieces: Sequence[Piece]) -> int:
        """Write the pieces one after another (each at its slot's next positions), set each
        one's `at` and the logits flags; the number of entries."""
        n = 0
        for piece in pieces:
            k, p = len(piece.tokens), piece.slot.n_past
            piece.at = n
            self.tok[n:n + k] = piece.tokens
            self.pos[n:n + k] = np.arange(p, p + k, dtype=np.int32)
            self.seq[n:n + k] = piece.slot.seq
            self.logits[n:n + k] = piece.kind == Kind.VERIFY
            self.logits[n + k - 1] = piece.kind != Kind.PROMPT or piece.ends
            n += k
        self.c.n_tokens = n
        return n


class LogitsRows:
    """A batch entry's logits as a view of llama.cpp's buffer (valid until the next decode).

    A private handle on llama_get_logits_ith (its own CDLL, so llama-cpp-python's shared one
    keeps its types) returning a plain address: numpy's as_array on a ctypes pointer builds a new
    array type per call (~60 us, most of a token's Python)."""

    def __init__(self, ctx: ll.llama_context_p, n_vocab: int) -> None:
        self._ctx = ctx
        self._ith = ctypes.CDLL(ll.llama_cpp._lib._name).llama_get_logits_ith
        self._ith.argtypes, self._ith.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.c_void_p
        self._row: Any = ctypes.c_float * n_vocab  # an array type (typeshed's frombuffer knows no ctypes)

    def __call__(self, index: int) -> np.ndarray:
        address = self._ith(self._ctx, index)
        if not address:
            raise RuntimeError(f"no logits for batch entry {index}")
        return np.frombuffer(self._row.from_address(address), np.float32)
