"""What each slot puts into a llama_decode: a prompt chunk, its next token, or its next token and a
draft to verify; which of them a step takes, and the slot bookkeeping once they are in the KV.

batch.py lays pieces out in the llama_batch, engine.py decodes them and reads their logits.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import llama_cpp as ll

from corral.runner.slot import Request, Slot, prompt_chunk


class Kind(enum.Enum):
    PROMPT = "prompt"  # a chunk of a prompt: logits at its last token if it ends the prompt
    NEXT = "next"  # a generating slot's next token: logits
    VERIFY = "verify"  # a generating slot's next token and a draft: logits at every position


@dataclass(slots=True)
class Piece:
    """Tokens of one slot at its next positions (slot.n_past, ...) in one decode."""

    slot: Slot
    req: Request  # the request they are for (a failed decode may have ended it since)
    kind: Kind
    tokens: list[int]
    ends: bool = True  # a PROMPT chunk: it ends the prompt, so its last token is sampled
    at: int = 0  # batch index of the first token, once laid out
    out: int = 0  # its first logits row among the decode's (batch.LogitsRows), once laid out
    pos: int = 0  # the slot's next position before the piece (advance)

    @property
    def last(self) -> int:
        return self.at + len(self.tokens) - 1


def prompt_pieces(active: Iterable[Slot], room: int, min_piece: int) -> list[Piece]:
    """Chunks of waiting prompts, first come first served, `room` tokens in all (a chunk may
    exceed what is left by min_piece - 1: see prompt_chunk)."""
    pieces = []
    for slot in active:
        if room <= 0:
            break
        req = slot.request
        if req.prefilling:
            left = len(req.prompt) - req.n_prompt
            take = prompt_chunk(left, room, min_piece)
            pieces.append(Piece(slot, req, Kind.PROMPT, req.prompt[req.n_prompt:req.n_prompt + take], take == left))
            room -= take
    return pieces


def next_piece(slot: Slot, room: int) -> Piece:
    """A generating slot's next token, with a draft (at most `room` tokens) to verify after it if
    its request drafts: never past num_predict or the context's end, so an accepted run needs no
    shift inside it."""
    req = slot.request
    draft: list[int] = []
    if req.drafter is not None:
        room = min(req.ctx_limit - slot.n_past - 2, room)
        if req.num_predict > 0:
            room = min(room, req.num_predict - req.n_generated - 1)
        draft = req.drafter.draft(room)
    return Piece(slot, req, Kind.VERIFY if draft else Kind.NEXT, [req.next_token, *draft])


def advance(piece: Piece) -> None:
    """The slot's bookkeeping once its piece is in the batch. A verified draft's tokens are not
    counted: only those the model agrees with are, after the decode (engine._accept)."""
    slot, req = piece.slot, piece.req
    piece.pos = slot.n_past
    if piece.kind == Kind.PROMPT:
        slot.n_past += len(piece.tokens)
        req.n_prompt += len(piece.tokens)
        slot.cached.extend(piece.tokens)
    else:
        slot.n_past += 1
        slot.cached.append(piece.tokens[0])


def rewind(piece: Piece, memory: ll.llama_memory_t) -> None:
    """Undo advance() and whatever a failed decode left of the piece in the KV."""
    slot = piece.slot
    ll.llama_memory_seq_rm(memory, slot.seq, piece.pos, -1)
    del slot.cached[piece.pos:]
    slot.n_past = piece.pos
    if piece.kind == Kind.PROMPT:
        piece.req.n_prompt -= len(piece.tokens)
