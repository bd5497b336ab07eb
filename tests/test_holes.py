"""Holes in a decode's run of sequence ids (runner/packing.py holes, engine._fill): llama.cpp cuts a
batch at each hole (one KV stream per sequence), so a small hole is filled with throwaway tokens
that leave the KV again after the decode. Pure layout, then the real engine: the others' answers
are what they are alone (exact mode), the hole's slot keeps exactly what it had, and a request
that reuses that slot's prefix answers as a fresh one does."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp as ll
import pytest
from conftest import SMOL
from test_host_step import piece

from corral.models.store import ModelName, Store
from corral.runner.batch import DecodeBatch
from corral.runner.engine import Engine
from corral.runner.packing import FILL_TOKEN, holes
from corral.runner.pieces import Kind
from corral.runner.protocol import Done, GenerationOptions, LoadConfig, Token, Up


def test_one_missing_id_with_two_or_more_on_each_side_is_filled():
    assert holes([0, 1, 2, 4, 5, 6, 7]) == [3]
    assert holes([0, 1, 3, 4, 5]) == [2]
    assert holes([3, 4, 6, 7]) == [5]
    assert holes([0, 1, 2, 3]) == []  # no hole
    assert holes([0, 1, 2, 4]) == [] and holes([0, 2, 3]) == []  # one token cut off costs what filling does
    assert holes([0, 2]) == []
    assert holes([0, 3, 7]) == [] and holes([0, 2, 4, 6, 7]) == []  # several holes, or a wide one
    assert holes([2]) == [] and holes([]) == []
    assert holes([3, 1, 2, 5]) == [] and holes([0, 1, 1, 3]) == []  # not one seq-ordered call: left alone


def test_fillers_are_laid_in_sequence_order_without_logits():
    batch = DecodeBatch.make(16)
    ones = [piece(0, 5, Kind.NEXT, [11]), piece(3, 9, Kind.NEXT, [14])]
    assert batch.lay(ones, [(2, 40), (1, 7)]) == (4, 2)
    assert batch.tok[:4].tolist() == [11, FILL_TOKEN, FILL_TOKEN, 14]
    assert batch.seq[:4].tolist() == [0, 1, 2, 3]
    assert batch.pos[:4].tolist() == [5, 7, 40, 9]
    assert batch.logits[:4].tolist() == [1, 0, 0, 1]
    assert [(p.at, p.out) for p in ones] == [(0, 0), (3, 1)]
    # A trailing filler, and a prompt chunk among them.
    mixed = [piece(0, 5, Kind.PROMPT, [21, 22, 23]), piece(2, 3, Kind.NEXT, [24])]
    assert batch.lay(mixed, [(1, 0), (3, 8)]) == (6, 2)
    assert batch.seq[:6].tolist() == [0, 0, 0, 1, 2, 3]
    assert batch.logits[:6].tolist() == [0, 0, 1, 0, 1, 0]


SHORT = GenerationOptions(temperature=0, num_predict=2)
LONG = GenerationOptions(temperature=0, num_predict=20)


@pytest.fixture(scope="module")
def engine(model_store) -> Iterator[Engine]:
    path = Store(model_store).model_file(ModelName.parse(SMOL))
    eng = Engine(LoadConfig(str(path), n_slots=5, n_ctx_slot=512, n_threads=2, prompt_cache_bytes=0, exact=True))
    yield eng
    eng.close()


def chat(engine: Engine, text: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def run(engine: Engine, jobs: list[tuple[str, list[int], GenerationOptions]]) -> tuple[dict[str, str], list[int]]:
    """Submit the jobs in order (slots 0, 1, ... from a clean engine) and step to the end; the
    answers, and how many fillers each decode carried."""
    for slot in engine.slots.free:
        engine.slots.clear(slot)
    texts: dict[str, str] = {}
    fills: list[int] = []
    real = engine._fill

    def counting(pieces):
        fill = real(pieces)
        fills.append(len(fill))
        return fill

    engine._fill = counting  # type: ignore[method-assign]
    try:
        for request_id, tokens, opts in jobs:
            engine.submit(request_id, tokens, opts)
        while engine.active:
            events: list[Up] = engine.step()
            for ev in events:
                if isinstance(ev, Token):
                    texts[ev.id] = texts.get(ev.id, "") + ev.text
                elif isinstance(ev, Done):
                    texts.setdefault(ev.id, "")
    finally:
        del engine._fill
    return texts, fills


def test_a_hole_is_filled_and_the_others_answer_as_alone(engine):
    jobs = {name: chat(engine, text) for name, text in (
        ("a", "Name three rivers."), ("b", "What is a prime number?"), ("c", "Hi"),
        ("d", "Why is the sky blue?"), ("e", "Describe a cat."))}
    alone = {name: run(engine, [(name, tokens, LONG)])[0][name] for name, tokens in jobs.items() if name != "c"}
    together, fills = run(engine, [(name, tokens, SHORT if name == "c" else LONG) for name, tokens in jobs.items()])
    assert sum(fills) > 0, "c's early end left slot 2 between generating slots 0-1 and 3-4: it was filled"
    assert {name: together[name] for name in alone} == alone
    # Slot 2 (c's) keeps exactly what c left: no filler stays in its KV.
    hole = next(slot for slot in engine.slots.free if slot.seq == 2)
    assert ll.llama_memory_seq_pos_max(engine.memory, 2) == len(hole.cached) - 1


def test_a_prefix_reused_from_a_filled_slot_answers_as_fresh(engine):
    jobs = {name: chat(engine, text) for name, text in (
        ("a", "Name three rivers."), ("b", "What is a prime number?"), ("c", "Count from one to ten."),
        ("d", "Why is the sky blue?"), ("e", "Describe a cat."))}
    fresh, _ = run(engine, [("c", jobs["c"], LONG)])
    # c's slot (2) is filled while the others go on; then c's prompt again takes the lowest free
    # slot (2, once 0 and 1 are busy again) and reuses what is cached there.
    _, fills = run(engine, [(name, tokens, SHORT if name == "c" else LONG) for name, tokens in jobs.items()])
    assert sum(fills) > 0
    engine.submit("a2", jobs["a"], SHORT)  # slot 0 ...
    engine.submit("b2", jobs["b"], SHORT)  # ... slot 1 ...
    engine.submit("c2", jobs["c"], LONG)  # ... so c's prompt goes to slot 2, where c left its prefix
    slot = next(slot for slot in engine.active if slot.request.id == "c2")
    assert slot.seq == 2 and slot.request.n_prompt > len(jobs["c"]) // 2  # most of it reused
    texts: dict[str, str] = {}
    while engine.active:
        for ev in engine.step():
            if isinstance(ev, Token):
                texts[ev.id] = texts.get(ev.id, "") + ev.text
    assert texts["c2"] == fresh["c"]


def test_no_filler_goes_past_the_batchs_capacity(engine):
    """The batch's buffers hold n_batch entries: a step that fills them leaves its hole."""
    n = engine.n_batch
    full = [piece(0, 0, Kind.PROMPT, [1] * (n - 3)), piece(1, 0, Kind.NEXT, [1]),
            piece(3, 0, Kind.NEXT, [1]), piece(4, 0, Kind.NEXT, [1])]
    assert engine._fill(full) == []
    room = [piece(0, 0, Kind.PROMPT, [1] * (n - 4)), *full[1:]]
    assert [seq for seq, _ in engine._fill(room)] == [2]
