"""One generation slot of the engine, and the small rules for filling it."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from corral.runner.textstream import TextStream


@dataclass
class Slot:
    seq: int
    id: str = ""
    prompt: list[int] = field(default_factory=list)
    n_past: int = 0  # tokens of this sequence already in the KV cache
    cached: list[int] = field(default_factory=list)  # those tokens; kept after a request for reuse
    next_token: int = -1  # sampled, not yet decoded
    n_generated: int = 0
    num_predict: int = -1
    ctx_limit: int = 0  # this request's num_ctx, at most the slot's
    shift: bool = True  # a full context is shifted (not finished) for this request
    num_keep: int = 4  # tokens after the start token a shift keeps
    shifted: bool = False  # its KV was shifted: not a prefix to reuse
    sampler: ctypes.c_void_p | None = None
    greedy: bool = False  # plain argmax: sampled in numpy, no llama.cpp sampler chain needed
    text: TextStream | None = None
    t_prompt: int = 0
    t_first: int = 0
    decode_ns: int = 0

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)


def prompt_chunk(remaining: int, room: int, min_piece: int = 2) -> int:
    """Prompt tokens to decode now: at most `room` (but at least `min_piece`), never leaving
    fewer than `min_piece` behind, so no piece of a prompt is shorter than `min_piece` tokens
    unless the whole prompt is. Short pieces take other matmul kernels than long ones (a
    one-token piece on the CPU; up to 16 tokens on CUDA), which would change the numbers."""
    take = min(remaining, max(room, min_piece))
    left = remaining - take
    if 0 < left < min_piece:
        shorter = take - (min_piece - left)
        take = shorter if shorter >= min_piece else remaining
    return take
