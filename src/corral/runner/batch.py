"""The engine's llama_batch over numpy buffers it owns, and a fast view of a batch entry's logits."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as ll
import numpy as np

from corral.runner.packing import FILL_TOKEN
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

    def lay(self, pieces: Sequence[Piece], fill: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
        """Write the pieces one after another (each at its slot's next positions), set each
        one's `at`, `out` and the logits flags; the number of entries and of logits rows.
        `fill`: (sequence id, position) of throwaway tokens, each laid in sequence order among
        the pieces (which are then in sequence order too), without logits."""
        if not fill and all(len(piece.tokens) == 1 for piece in pieces):
            return self._lay_ones(pieces)
        n = n_out = 0
        fills = sorted(fill, reverse=True)
        for piece in pieces:
            while fills and fills[-1][0] < piece.slot.seq:
                n = self._put_fill(n, *fills.pop())
            k, p = len(piece.tokens), piece.slot.n_past
            piece.at, piece.out = n, n_out
            self.tok[n:n + k] = piece.tokens
            self.pos[n:n + k] = np.arange(p, p + k, dtype=np.int32)
            self.seq[n:n + k] = piece.slot.seq
            self.logits[n:n + k] = piece.kind == Kind.VERIFY
            self.logits[n + k - 1] = piece.kind != Kind.PROMPT or piece.ends
            n += k
            n_out += k if piece.kind == Kind.VERIFY else int(piece.kind != Kind.PROMPT or piece.ends)
        while fills:
            n = self._put_fill(n, *fills.pop())
        self.c.n_tokens = n
        return n, n_out

    def _put_fill(self, n: int, seq: int, pos: int) -> int:
        self.tok[n], self.pos[n], self.seq[n], self.logits[n] = FILL_TOKEN, pos, seq, 0
        return n + 1

    def _lay_ones(self, pieces: Sequence[Piece]) -> tuple[int, int]:
        """One token a piece (a generating step): each buffer filled from one list, not four
        numpy slice writes per piece (a third of the step's host time at 8 slots)."""
        k = len(pieces)
        flags = [piece.kind != Kind.PROMPT or piece.ends for piece in pieces]
        self.tok[:k] = [piece.tokens[0] for piece in pieces]
        self.pos[:k] = [piece.slot.n_past for piece in pieces]
        self.seq[:k] = [piece.slot.seq for piece in pieces]
        self.logits[:k] = flags
        n_out = 0
        for i, (piece, flag) in enumerate(zip(pieces, flags, strict=True)):
            piece.at, piece.out = i, n_out
            n_out += flag
        self.c.n_tokens = k
        return k, n_out


class LogitsRows:
    """The last decode's logits, one row per batch entry that asked for them, in batch order
    (llama.h: llama_get_logits), as a numpy view of llama.cpp's buffer (valid until the next
    decode). load() after each decode, then rows by output index (Piece.out).

    A private handle on llama_get_logits (its own CDLL, so llama-cpp-python's shared one keeps its
    types) returning a plain address, and one cached ctypes array type per row count: numpy's
    as_array on a ctypes pointer builds a new array type per call (~60 us); one call and one view
    a decode, not one of each per row."""

    def __init__(self, ctx: ll.llama_context_p, n_vocab: int) -> None:
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._get = ctypes.CDLL(ll.llama_cpp._lib._name).llama_get_logits
        self._get.argtypes, self._get.restype = [ctypes.c_void_p], ctypes.c_void_p
        self._types: dict[int, Any] = {}  # rows → ctypes array type (typeshed's frombuffer knows no ctypes)
        self.view = np.empty((0, n_vocab), np.float32)

    def load(self, n_rows: int) -> None:
        address = self._get(self._ctx)
        if not address:
            raise RuntimeError("no logits after the decode")
        kind: Any = self._types.get(n_rows)
        if kind is None:
            kind = self._types[n_rows] = ctypes.c_float * (n_rows * self._n_vocab)
        self.view = np.frombuffer(kind.from_address(address), np.float32).reshape(n_rows, self._n_vocab)

    def __call__(self, row: int) -> np.ndarray:
        return self.view[row]
