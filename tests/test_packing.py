"""Busy slots kept in one run of sequence ids (runner/packing.py): llama.cpp decodes only a run of
consecutive ids as one ubatch, so scattered slots cost a pass over the weights each. Pure layout
rules, then the real engine: a new request takes a slot next to the busy ones, and a request moved
to another slot answers exactly as it does alone (exact mode), its KV whole in the new slot and
none left in the old one; and a real server that packs (counted on /metrics)."""

from __future__ import annotations

import asyncio

import httpx
import llama_cpp as ll
from conftest import SMOL
from helpers import stream_generate, warm
from test_holes import LONG, SHORT, chat, engine, run  # noqa: F401 (engine: the same fixture, 5 exact slots)

from corral.runner.engine import Engine
from corral.runner.packing import packing, runs


def test_runs_count_the_passes_after_the_filled_hole():
    assert runs([0, 1, 2, 3]) == 1 and runs([5]) == 1 and runs([]) == 0
    assert runs([0, 1, 2, 4, 5, 6, 7]) == 1  # the hole is filled
    assert runs([0, 2, 3]) == 2 and runs([0, 3, 7]) == 3 and runs([1, 3, 5, 7]) == 4


def test_packing_moves_the_fewest_requests_into_one_run():
    assert packing([0, 1, 2, 3], 8) == [] and packing([2, 3, 4], 8) == []  # one run already
    assert packing([0, 1, 2, 4, 5, 6, 7], 8) == []  # filled instead
    assert packing([0, 2, 3, 4, 5, 6, 7], 8) == [(7, 1)]  # one id cut off: the lowest window
    assert packing([0, 3, 7], 8) == [(3, 1), (7, 2)]
    assert packing([1, 3, 5, 7], 8) == [(5, 0), (7, 2)]
    assert packing([3, 5, 6], 8) == [(6, 4)]  # a window holding two of them: one move, the lowest window


def jobs(engine: Engine) -> dict[str, list[int]]:
    return {name: chat(engine, text) for name, text in (
        ("a", "Name three rivers."), ("b", "Hi"), ("c", "Why is the sky blue?"), ("d", "Hello"),
        ("e", "Describe a cat."))}


def test_a_moved_request_answers_as_alone(engine):
    prompts = jobs(engine)
    alone = {name: run(engine, [(name, prompts[name], LONG)])[0][name] for name in "ace"}
    before = engine.slots.moves
    # b and d end after two tokens: a, c, e are left in slots 0, 2 and 4 (three passes a step),
    # and e moves to slot 1.
    together, _ = run(engine, [(name, tokens, SHORT if name in "bd" else LONG) for name, tokens in prompts.items()])
    assert engine.slots.moves > before
    assert {name: together[name] for name in alone} == alone


def test_the_moved_state_is_whole_in_its_new_slot_and_gone_from_the_old(engine):
    prompts = jobs(engine)
    for slot in engine.slots.free:
        engine.slots.clear(slot)
    for name, tokens in prompts.items():
        engine.submit(name, tokens, SHORT if name in "bd" else LONG)
    while {slot.seq for slot in engine.active} != {0, 1, 2}:
        engine.step()
    moved = engine.slots.by_seq[1]
    assert moved.request.id == "e"
    assert ll.llama_memory_seq_pos_max(engine.memory, 1) == moved.n_past - 1 == len(moved.cached) - 1
    assert ll.llama_memory_seq_pos_max(engine.memory, 4) == -1 and engine.slots.by_seq[4].n_past == 0
    while engine.active:
        engine.step()


def test_a_new_request_takes_a_slot_next_to_the_busy_ones(engine):
    prompts = jobs(engine)
    for slot in engine.slots.free:
        engine.slots.clear(slot)
    engine.submit("a", prompts["a"], SHORT)  # slot 0
    engine.submit("b", prompts["b"], SHORT)  # slot 1
    engine.submit("c", prompts["c"], LONG)  # slot 2
    engine.submit("e", prompts["e"], LONG)  # slot 3
    while len(engine.active) > 2:
        engine.step()
    assert sorted(slot.seq for slot in engine.active) == [2, 3]
    engine.submit("d", prompts["d"], SHORT)
    assert next(slot.seq for slot in engine.active if slot.request.id == "d") == 1  # not 0, the lowest
    while engine.active:
        engine.step()


def slot_moves(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f'corral_runner_slot_moves_total{{model="{SMOL}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_server_packs_and_answers_as_alone(start_server):
    """The real server (exact mode, 4 slots): requests sent one after another's first token take
    slots 0-3; the second and fourth end early, the third moves next to the first, and every
    answer is the one it gives alone."""
    server = start_server(OLLAMA_NUM_PARALLEL="4", CORRAL_EXACT="1")
    warm(server.url, SMOL)
    prompts = ["Name three rivers.", "Count from one to twenty.", "Why is the sky blue?", "List the days of the week."]
    options = [{"temperature": 0, "num_predict": n} for n in (64, 16, 64, 16)]
    alone = [asyncio.run(stream_generate(server.url, SMOL, p, o))["text"] for p, o in zip(prompts, options)]
    before = slot_moves(server.url)

    async def staggered() -> list[dict]:
        tasks = []
        for prompt, opts in zip(prompts, options):
            started = asyncio.Event()
            tasks.append(asyncio.create_task(stream_generate(server.url, SMOL, prompt, opts, streaming=started)))
            await asyncio.wait_for(started.wait(), 60)  # its slot is taken: the next one goes beside it
        return list(await asyncio.gather(*tasks))

    together = asyncio.run(staggered())
    assert [r["error"] for r in together] == [None] * 4
    assert [r["text"] for r in together] == alone
    assert slot_moves(server.url) > before
