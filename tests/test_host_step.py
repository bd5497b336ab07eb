"""The runner's host work per step (issue 14: what a step spends outside llama_decode): a Token
line written out by hand, a generating step's batch filled from one list per buffer, and the
logits rows read from one llama_get_logits view. Each must give what the slower way gave."""

from __future__ import annotations

import json
from collections.abc import Iterator

import llama_cpp as ll
import numpy as np
import pytest
from conftest import SMOL

from corral.models.store import ModelName, Store
from corral.runner.batch import DecodeBatch
from corral.runner.engine import Engine
from corral.runner.pieces import Kind, Piece
from corral.runner.protocol import LoadConfig, Token, decode_up, encode
from corral.runner.slot import Request, Slot
from corral.runner.textstream import TextStream

TEXTS = ["", "hi", ' a "quote" and a \\ backslash', "new\nline\ttab\r\x00\x1f\x7f", "€ 日本語 😀",
         "\u2028\u2029 separators", "</script>"]


@pytest.mark.parametrize("text", TEXTS)
def test_a_token_line_is_what_json_dumps_writes(text):
    for request_id in ("r1", "chatcmpl-0123456789abcdef", 'odd"id'):
        line = encode(Token(request_id, text))
        wire = {"ev": "tok", "id": request_id, "text": text}
        assert line == json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        assert decode_up(line) == Token(request_id, text)


def request(tokens: list[int]) -> Request:
    return Request("r", tokens, ctx_limit=1024, num_predict=8, shift=False, num_keep=0, text=TextStream([]),
                   sampler=None, greedy=True)


def piece(seq: int, n_past: int, kind: Kind, tokens: list[int], ends: bool = True) -> Piece:
    return Piece(Slot(seq, n_past=n_past), request(tokens), kind, tokens, ends)


def test_a_generating_step_is_laid_out_as_pieces_one_by_one():
    # One token a piece (the list path), a one-token prompt piece that does not end its prompt
    # among them (no logits: fast mode may cut one); then the same with a two-token piece in
    # the middle, which takes the per-piece path.
    ones = [piece(0, 5, Kind.NEXT, [11]), piece(1, 7, Kind.PROMPT, [12], ends=False),
            piece(2, 3, Kind.PROMPT, [13]), piece(4, 9, Kind.NEXT, [14])]
    batch = DecodeBatch.make(16)
    assert batch.lay(ones) == (4, 3)
    assert batch.c.n_tokens == 4
    assert batch.tok[:4].tolist() == [11, 12, 13, 14]
    assert batch.pos[:4].tolist() == [5, 7, 3, 9]
    assert batch.seq[:4].tolist() == [0, 1, 2, 4]
    assert batch.logits[:4].tolist() == [1, 0, 1, 1]
    assert [(p.at, p.out) for p in ones] == [(0, 0), (1, 1), (2, 1), (3, 2)]

    mixed = [ones[0], piece(1, 7, Kind.VERIFY, [21, 22, 23]), ones[1], ones[3]]
    assert batch.lay(mixed) == (6, 5)
    assert batch.tok[:6].tolist() == [11, 21, 22, 23, 12, 14]
    assert batch.pos[:6].tolist() == [5, 7, 8, 9, 7, 9]
    assert batch.logits[:6].tolist() == [1, 1, 1, 1, 0, 1]
    assert [(p.at, p.out) for p in mixed] == [(0, 0), (1, 1), (4, 4), (5, 4)]


@pytest.fixture(scope="module")
def engine(model_store) -> Iterator[Engine]:
    path = Store(model_store).model_file(ModelName.parse(SMOL))
    eng = Engine(LoadConfig(str(path), n_slots=4, n_ctx_slot=512, n_threads=2, prompt_cache_bytes=0))
    yield eng
    eng.close()


def test_logits_rows_are_the_batch_entries_logits(engine):
    """Row `out` of the one view is llama_get_logits_ith(at) of each entry that has logits:
    a prompt's last token, a draft's every position, a next token (llama.h's contiguity)."""
    prompt = engine.tokenize("<|im_start|>user\nHello there<|im_end|>\n")
    slots = list(engine.slots.free)[:4]
    for slot in slots:
        engine.slots.clear(slot)
        slot.n_past = 0
    pieces = [Piece(slots[0], request(prompt), Kind.PROMPT, prompt),
              Piece(slots[1], request(prompt[:4]), Kind.PROMPT, prompt[:4], ends=False),
              Piece(slots[2], request(prompt[:5]), Kind.VERIFY, prompt[:5]),
              Piece(slots[3], request(prompt[:1]), Kind.NEXT, prompt[:1])]
    n, n_out = engine._buffers.lay(pieces)
    assert (n, n_out) == (len(prompt) + 10, 7)
    assert ll.llama_decode(engine.ctx, engine.batch) == 0
    engine._rows.load(n_out)
    rows = [(pieces[0].last, pieces[0].out), *((pieces[2].at + i, pieces[2].out + i) for i in range(5)),
            (pieces[3].at, pieces[3].out)]
    assert [out for _, out in rows] == list(range(7))
    for at, out in rows:
        expected = np.ctypeslib.as_array(ll.llama_get_logits_ith(engine.ctx, at), shape=(engine.n_vocab,))
        assert np.array_equal(engine._rows(out), expected)
    for slot in slots:
        engine.slots.clear(slot)
        slot.n_past = 0
