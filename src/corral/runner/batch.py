"""The engine's llama_batch over numpy buffers it owns."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp as ll
import numpy as np


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
