"""The stream interval (runner/coalesce.py): what a runner sends of each step's events."""

from __future__ import annotations

import pytest

from corral.config import Settings
from corral.runner.coalesce import Coalescer
from corral.runner.protocol import Done, Failed, FinishReason, Stats, Token, TokenLogprob, Up, decode_up, encode


def lp(token: str) -> TokenLogprob:
    return TokenLogprob(token, -0.5, tuple(token.encode()))


def test_interval_zero_sends_every_event_as_it_comes() -> None:
    c = Coalescer(0.0)
    events: list[Up] = [Token("r1", "a"), Token("r2", "b"), Done("r1", FinishReason.STOP)]
    assert c.take(events, 0.0) is events


def test_first_text_goes_at_once_then_one_write_per_interval() -> None:
    c = Coalescer(0.020)
    assert c.take([Token("r1", "He")], 0.000) == [Token("r1", "He")]  # the first token is never held
    assert c.take([Token("r1", "llo")], 0.007) == []
    assert c.take([Token("r1", ",")], 0.014) == []
    assert c.take([Token("r1", " wor")], 0.021) == [Token("r1", "llo, wor")]
    assert c.take([Token("r1", "ld")], 0.028) == []


def test_held_text_goes_before_the_end_of_its_request() -> None:
    c = Coalescer(0.020)
    c.take([Token("r1", "a")], 0.0)
    c.take([Token("r1", "b")], 0.005)
    done = Done("r1", FinishReason.STOP, eval_count=3)
    stats = Stats(1, 2)
    assert c.take([Token("r1", "c"), done, stats], 0.010) == [Token("r1", "bc"), done, stats]
    # The request is forgotten: a later one with the same id starts afresh.
    assert c.take([Token("r1", "x")], 0.011) == [Token("r1", "x")]
    c.take([Token("r1", "y")], 0.012)
    failed = Failed("r1", "boom")
    assert c.take([failed], 0.013) == [Token("r1", "y"), failed]


def test_held_text_is_flushed_by_a_later_step_without_text_for_it() -> None:
    c = Coalescer(0.020)
    c.take([Token("r1", "a"), Token("r2", "A")], 0.0)
    assert c.take([Token("r1", "b")], 0.010) == []
    # r2 says nothing this step (its prompt is long, or a stop string holds its text back).
    assert c.take([Token("r2", "B")], 0.025) == [Token("r2", "B"), Token("r1", "b")]


def test_requests_keep_their_own_intervals() -> None:
    c = Coalescer(0.020)
    assert c.take([Token("r1", "a")], 0.0) == [Token("r1", "a")]
    assert c.take([Token("r1", "b"), Token("r2", "A")], 0.010) == [Token("r2", "A")]
    assert c.take([Token("r1", "c"), Token("r2", "B")], 0.020) == [Token("r1", "bc")]
    assert c.take([Token("r1", "d"), Token("r2", "C")], 0.031) == [Token("r2", "BC")]


def test_logprobs_are_merged_in_order_and_survive_the_wire() -> None:
    c = Coalescer(0.020)
    c.take([Token("r1", "a", [lp("a")])], 0.0)
    c.take([Token("r1", "", [lp("\xe2")])], 0.005)  # a piece that completes no character yet
    out = c.take([Token("r1", "bc", [lp("b"), lp("c")])], 0.030)
    assert out == [Token("r1", "bc", [lp("\xe2"), lp("b"), lp("c")])]
    assert decode_up(encode(out[0])) == out[0]


def test_the_interval_is_read_once_and_bounded() -> None:
    assert Settings.from_env({}).stream_interval == pytest.approx(0.05)
    assert Settings.from_env({"CORRAL_STREAM_INTERVAL": "0"}).stream_interval == 0.0
    assert Settings.from_env({"CORRAL_STREAM_INTERVAL": "20ms"}).stream_interval == pytest.approx(0.02)
    assert Settings.from_env({"CORRAL_STREAM_INTERVAL": "0.05"}).stream_interval == pytest.approx(0.05)
    for bad in ("-1", "2s", "soon"):
        with pytest.raises(ValueError):
            Settings.from_env({"CORRAL_STREAM_INTERVAL": bad})
