"""Fast mode's one llama_decode per step (runner/engine.py _step_fast): generating slots' tokens,
drafts and prompt chunks share a call. In-process on the real model (decode counts, one request
alone vs the per-piece decodes exact mode makes, a failed shared decode), and on a live server
with requests arriving while others generate (complete answers, the counts they get alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import llama_cpp as ll
import pytest
from conftest import SMOL
from helpers import stream_generate, warm

from corral.models.store import ModelName, Store
from corral.runner.engine import Engine
from corral.runner.protocol import Done, Failed, GenerationOptions, LoadConfig, Token, Up

GREEDY = GenerationOptions(temperature=0, num_predict=24)
STORY = "Write a long story about a dragon."
RAIN = "Explain how rain forms, in detail."
REPEAT = ("Repeat exactly: the quick brown fox jumps over the lazy dog, the quick brown fox jumps over "
          "the lazy dog, the quick brown fox jumps over the lazy dog.")
LONG = "Describe the city of Paris at length, its streets, its river and its people. " * 20


@pytest.fixture(scope="module")
def engine(model_store) -> Iterator[Engine]:
    path = Store(model_store).model_file(ModelName.parse(SMOL))
    eng = Engine(LoadConfig(str(path), n_slots=4, n_ctx_slot=1024, n_threads=2, prompt_cache_bytes=0))
    assert not eng.exact  # the default
    yield eng
    eng.close()


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """The batch size of every llama_decode the engine makes."""
    sizes: list[int] = []
    real = ll.llama_decode

    def counting(ctx, batch):
        sizes.append(batch.n_tokens)
        return real(ctx, batch)

    monkeypatch.setattr(ll, "llama_decode", counting)
    return sizes


def chat(engine: Engine, text: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def fresh(engine: Engine) -> None:
    """No KV left from earlier requests: each run decodes its whole prompt."""
    for slot in engine.slots.free:
        engine.slots.clear(slot)


def drain(engine: Engine, events: list[Up], texts: dict[str, str], ends: dict[str, Up]) -> None:
    for ev in events:
        if isinstance(ev, Token):
            texts[ev.id] = texts.get(ev.id, "") + ev.text
        elif isinstance(ev, (Done, Failed)):
            ends[ev.id] = ev


def answer(engine: Engine, prompt: list[int], opts: GenerationOptions) -> tuple[str, Up]:
    fresh(engine)
    texts: dict[str, str] = {}
    ends: dict[str, Up] = {}
    engine.submit("one", prompt, opts)
    while engine.active:
        drain(engine, engine.step(), texts, ends)
    return texts.get("one", ""), ends["one"]


@pytest.mark.parametrize("speculative", [False, True])
def test_one_request_alone_decodes_as_before(engine, monkeypatch, speculative):
    """Alone, a step holds one piece: the same decodes, so the same answer, as the per-piece path
    (exact mode's, which was every mode's before the shared decode) on the same kernels."""
    opts = GenerationOptions(temperature=0, num_predict=40, speculative=speculative)
    prompt = chat(engine, REPEAT)
    shared = answer(engine, prompt, opts)
    monkeypatch.setattr(engine, "exact", True)  # the per-piece step; kernels stay fast ones
    per_piece = answer(engine, prompt, opts)
    assert shared[0] and shared[0] == per_piece[0], (shared, per_piece)
    assert isinstance(shared[1], Done) and isinstance(per_piece[1], Done)
    assert (shared[1].prompt_eval_count, shared[1].eval_count) == (per_piece[1].prompt_eval_count,
                                                                  per_piece[1].eval_count)


def test_a_prompt_arriving_shares_the_streams_decode(engine, decodes):
    fresh(engine)
    texts: dict[str, str] = {}
    ends: dict[str, Up] = {}
    engine.submit("a", chat(engine, STORY), GREEDY)
    engine.submit("b", chat(engine, RAIN), GenerationOptions(temperature=0, num_predict=24, speculative=True))
    while any(s.request.prefilling for s in engine.active):
        drain(engine, engine.step(), texts, ends)
    long_prompt = chat(engine, LONG)
    engine.submit("c", long_prompt, GREEDY)
    shared_steps = 0
    while engine.active:
        before = len(decodes)
        c_prefilling = any(s.request.id == "c" and s.request.prefilling for s in engine.active)
        events = engine.step()
        drain(engine, events, texts, ends)
        assert len(decodes) - before == 1  # every step one llama_decode, whatever it holds
        if c_prefilling and any(isinstance(e, Token) and e.id in ("a", "b") for e in events):
            shared_steps += 1
    # The long prompt was prefilled in chunks beside the two streams (each got tokens meanwhile).
    assert shared_steps >= 1
    assert max(decodes) <= engine.n_batch
    for rid in "abc":
        done = ends[rid]
        assert isinstance(done, Done) and done.eval_count == 24 and sum(ch.isalpha() for ch in texts[rid]) > 20
    assert ends["c"].prompt_eval_count == len(long_prompt)


def test_a_failed_shared_decode_fails_only_its_slot(engine):
    """A piece llama.cpp refuses (here: a sequence whose positions no longer follow its KV, as
    a bug would leave it) fails the shared call; every slot goes back and each piece is decoded
    alone, so only that request fails and the others finish."""
    fresh(engine)
    texts: dict[str, str] = {}
    ends: dict[str, Up] = {}
    for rid, text in (("a", STORY), ("b", RAIN), ("c", REPEAT)):
        engine.submit(rid, chat(engine, text), GREEDY)
    for _ in range(3):
        drain(engine, engine.step(), texts, ends)
    bad = next(s for s in engine.active if s.request.id == "b")
    bad.n_past += 5
    bad.cached += [0] * 5
    while engine.active:
        drain(engine, engine.step(), texts, ends)
    assert isinstance(ends["b"], Failed) and "llama_decode failed" in ends["b"].message
    for rid in "ac":
        assert isinstance(ends[rid], Done) and ends[rid].eval_count == 24, ends[rid]
    assert len(engine.slots.free) == 4


# -- live: a server in its default (fast) mode -------------------------------------------------

def test_requests_arriving_while_others_generate(start_server):
    """Four requests, two of them arriving while the first two stream (one with a long prompt,
    prefilled in chunks beside them): each gets a whole, sensible answer and the prompt and eval
    counts it gets alone (fast mode may change a batched greedy answer's words, not its length)."""
    server = start_server(OLLAMA_NUM_PARALLEL="4")
    warm(server.url, SMOL)
    options = {"temperature": 0, "num_predict": 32}
    prompts = [STORY, RAIN, LONG, "List many animals that live in the sea."]

    async def alone() -> list[dict]:
        return [await stream_generate(server.url, SMOL, p, options) for p in prompts]

    async def together() -> list[dict]:
        streaming = asyncio.Event()
        first = [asyncio.create_task(stream_generate(server.url, SMOL, prompts[0], options, streaming=streaming)),
                 asyncio.create_task(stream_generate(server.url, SMOL, prompts[1], options))]
        await streaming.wait()  # the others arrive once the first streams
        later = [asyncio.create_task(stream_generate(server.url, SMOL, p, options)) for p in prompts[2:]]
        return list(await asyncio.gather(*first, *later))

    solo = asyncio.run(alone())
    batched = asyncio.run(together())
    for one, many in zip(solo, batched, strict=True):
        assert many["error"] is None and many["final"]["done_reason"] == "length", many
        assert (many["final"]["prompt_eval_count"], many["final"]["eval_count"]) == (
            one["final"]["prompt_eval_count"], one["final"]["eval_count"])
        assert sum(ch.isalpha() for ch in many["text"]) > 10, many["text"]
    # The later ones really arrived while the first two streamed.
    assert batched[0]["token_times"][0] <= batched[2]["start"] < batched[0]["end"]
