"""One generation slot of the engine, and the small rules for filling it."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from corral.runner.logprobs import Logprobs
from corral.runner.speculative import Drafter
from corral.runner.textstream import TextStream


@dataclass(slots=True)
class Request:
    """One generate request inside the engine: built whole on submit, dropped when it ends."""

    id: str
    prompt: list[int]
    ctx_limit: int  # this request's num_ctx, at most the slot's
    num_predict: int
    shift: bool  # a full context is shifted (not finished)
    num_keep: int  # tokens after the start token a shift keeps
    text: TextStream
    sampler: ctypes.c_void_p | None  # llama.cpp's chain; freed when the request ends
    greedy: bool  # plain argmax: sampled in numpy, the chain unused
    logprobs: Logprobs | None = None  # only for a request that asked for them
    n_prompt: int = 0  # prompt tokens in the KV (reused or decoded)
    n_generated: int = 0
    next_token: int = -1  # sampled, not yet decoded
    shifted: bool = False  # its KV was shifted: not a prefix to reuse
    t_prompt: int = 0  # ns: first prompt chunk decoded
    t_first: int = 0  # ns: first token sampled
    generated: list[int] | None = None  # the answer's tokens, kept only when the request asked
    drafter: Drafter | None = None  # speculative decoding: prompt + answer so far (n-gram or draft model)

    @property
    def prefilling(self) -> bool:
        return self.n_prompt < len(self.prompt)


@dataclass(slots=True)
class Slot:
    """One KV sequence of the engine; what its last request left stays for prefix reuse."""

    seq: int
    n_past: int = 0  # tokens of this sequence in the KV cache (its next position)
    cached: list[int] = field(default_factory=list)  # those tokens
    req: Request | None = None

    @property
    def request(self) -> Request:
        """The request of an active slot (the engine only asks active slots)."""
        assert self.req is not None
        return self.req


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
