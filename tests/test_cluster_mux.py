"""cluster/mux.py: the multiplexed hop's pure parts: a node's outboxes (streams of one ingress, one
pump message per step whatever the number of streams, cancel, a pump that goes away, an ingress
that goes silent) and the ingress's streams (dispatch, order, unknown ids, failures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from corral.cluster import mux
from corral.cluster.messages import Body, End, Head
from corral.cluster.mux import Inbox, Mux, Outbox, StreamFailed, Streams


class Step:
    """A runner step for several fake replies: each `advance()` lets every reply send one token."""

    def __init__(self) -> None:
        self.tick = asyncio.Condition()
        self.n = 0

    async def advance(self) -> None:
        async with self.tick:
            self.n += 1
            self.tick.notify_all()

    async def wait(self, after: int) -> None:
        async with self.tick:
            await self.tick.wait_for(lambda: self.n > after)


async def reply(step: Step, tokens: int, closed: list[str], name: str, fail: bool = False) -> AsyncGenerator[Head | Body]:
    try:
        yield Head(200, ())
        for i in range(tokens):
            await step.wait(i)
            yield Body(f"{name}{i}".encode(), True)
        if fail:
            raise ConnectionError("runner died")
        yield Body(b"", False)
    finally:
        closed.append(name)


def test_every_streams_parts_of_one_step_leave_in_one_pump_message() -> None:
    async def scenario() -> list[dict]:
        step, closed = Step(), list[str]()
        outbox = Outbox("ingress", 0.0)
        firsts = await asyncio.gather(*(outbox.start(f"s{i}", reply(step, 3, closed, f"s{i}")) for i in range(4)))
        assert all(first == [Head(200, ())] for first in firsts)  # the Head answers start
        pump = outbox.pump()
        messages = []
        for _ in range(3):
            await step.advance()
            messages.append(await anext(pump))
        await pump.aclose()
        return messages

    messages = asyncio.run(scenario())
    assert len(messages) == 3  # three steps: three messages for four streams, not twelve
    for i, message in enumerate(messages[:2]):
        assert message == {f"s{n}": [Body(f"s{n}{i}".encode(), True)] for n in range(4)}
    # The last step's token, the end of the reply and its End come together.
    assert messages[2]["s0"] == [Body(b"s02", True), Body(b"", False), End()]


def test_a_pump_sends_once_per_interval_and_an_end_without_waiting_for_it() -> None:
    """Steps within the interval leave in one message (fewer Ray messages per token); a reply's
    End is not held: a long interval that the End cuts short shows it."""
    async def held() -> list[dict]:
        step, closed = Step(), list[str]()
        outbox = Outbox("ingress", 0.0, interval=0.3)
        await outbox.start("s", reply(step, 5, closed, "s"))
        pump = outbox.pump()
        await step.advance()
        messages = [await anext(pump)]  # the first message goes at once
        later = asyncio.ensure_future(anext(pump))
        for _ in range(2):  # two runner steps within the interval
            await step.advance()
            await asyncio.sleep(0.01)
        messages.append(await later)
        await pump.aclose()
        return messages

    async def ending() -> tuple[dict, float]:
        step, closed = Step(), list[str]()
        outbox = Outbox("ingress", 0.0, interval=60.0)
        await outbox.start("s", reply(step, 2, closed, "s"))
        pump = outbox.pump()
        await step.advance()
        await anext(pump)
        t0 = asyncio.get_running_loop().time()
        last = asyncio.ensure_future(anext(pump))
        await step.advance()  # the last token, then the reply's end
        message = await last
        await pump.aclose()
        return message, asyncio.get_running_loop().time() - t0

    first, second = asyncio.run(held())
    assert first == {"s": [Body(b"s0", True)]}
    assert second == {"s": [Body(b"s1", True), Body(b"s2", True)]}
    message, waited = asyncio.run(ending())
    assert message == {"s": [Body(b"s1", True), Body(b"", False), End()]}
    assert waited < 30  # not the 60 s interval


def test_start_returns_what_came_with_the_head_and_a_whole_reply_ends_there() -> None:
    async def whole() -> AsyncGenerator[Head | Body]:
        yield Head(503, ((b"retry-after", b"5"),))
        yield Body(b'{"error": "busy"}', False)

    async def scenario() -> tuple[list, int]:
        outbox = Outbox("ingress", 0.0)
        first = await outbox.start("s", whole())
        await asyncio.sleep(0)
        return first, outbox.streams

    first, running = asyncio.run(scenario())
    assert first == [Head(503, ((b"retry-after", b"5"),)), Body(b'{"error": "busy"}', False), End()]
    assert running == 0


def test_cancel_stops_one_stream_and_the_others_go_on() -> None:
    async def scenario() -> tuple[list[str], dict, bool, bool]:
        step, closed = Step(), list[str]()
        outbox = Outbox("ingress", 0.0)
        for name in ("a", "b"):
            await outbox.start(name, reply(step, 5, closed, name))
        pump = outbox.pump()
        await step.advance()
        await anext(pump)
        assert outbox.cancel("a")
        await step.advance()
        message = await anext(pump)
        unknown = outbox.cancel("nope")  # a stream that never was (or ended): nothing happens
        again = outbox.cancel("a")
        await pump.aclose()
        return closed, message, unknown, again

    closed, message, unknown, again = asyncio.run(scenario())
    assert closed[0] == "a"  # the cancelled reply was closed (its request disconnected)
    assert message == {"b": [Body(b"b1", True)]}
    assert unknown is False and again is False


def test_a_pump_that_goes_away_cancels_every_stream_of_its_ingress() -> None:
    async def scenario() -> tuple[list[str], tuple[bool, int], tuple[bool, int]]:
        step, closed = Step(), list[str]()
        nodes = Mux()
        mine, other = nodes.outbox("gone", 0.0), nodes.outbox("alive", 0.0)
        await mine.start("a", reply(step, 50, closed, "a"))
        await mine.start("b", reply(step, 50, closed, "b"))
        await other.start("c", reply(step, 50, closed, "c"))
        consumer = asyncio.create_task(anext(mine.pump()))
        await asyncio.sleep(0.01)
        consumer.cancel()  # Ray cancels the pump's generator when its caller cancels it
        with pytest.raises(asyncio.CancelledError):
            await consumer
        for _ in range(5):
            await asyncio.sleep(0)
        return sorted(closed), (mine.closed, mine.streams), (other.closed, other.streams)

    closed, mine, other = asyncio.run(scenario())
    assert closed == ["a", "b"] and mine == (True, 0)
    assert other == (False, 1)


def test_an_ingress_that_goes_silent_or_never_pumps_loses_its_streams() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        step, closed = Step(), list[str]()
        nodes = Mux()
        never = nodes.outbox("never", 0.0)
        await never.start("a", reply(step, 50, closed, "a"))
        assert not nodes.attached  # no lease to renew yet: the node does not ask the directory
        silent = nodes.outbox("silent", 0.0)
        await silent.start("b", reply(step, 50, closed, "b"))
        silent.attached = True  # as while its pump runs
        alive = nodes.outbox("alive", 0.0)
        await alive.start("c", reply(step, 50, closed, "c"))
        alive.attached = True
        early = nodes.expire(mux.ATTACH_S / 2)
        assert nodes.touch("alive", mux.ATTACH_S * 2) and not nodes.touch("unknown", 1.0)
        late = nodes.expire(mux.LEASE_S + 1)  # "never" after ATTACH_S, "silent" after LEASE_S
        assert nodes.attached  # "alive"'s pump
        alive.close()
        assert not nodes.attached
        await asyncio.sleep(0.01)
        return early, sorted(late), sorted(closed)

    early, late, closed = asyncio.run(scenario())
    assert early == [] and late == ["never", "silent"] and closed == ["a", "b", "c"]


def test_a_start_waiting_for_a_whole_reply_does_not_expire() -> None:
    async def scenario() -> list:
        release = asyncio.Event()

        async def slow() -> AsyncGenerator[Head | Body]:
            await release.wait()  # a non-streamed reply: its head comes at the end
            yield Head(200, ())
            yield Body(b"{}", False)

        nodes = Mux()
        outbox = nodes.outbox("ingress", 0.0)
        started = asyncio.create_task(outbox.start("s", slow()))
        await asyncio.sleep(0.01)
        assert nodes.expire(1000.0) == [] and nodes.get("ingress") is outbox
        release.set()
        return await started

    assert asyncio.run(scenario()) == [Head(200, ()), Body(b"{}", False), End()]


def test_an_idle_pump_ends_without_cancelling_and_an_app_failure_is_an_end_with_its_error(monkeypatch) -> None:
    monkeypatch.setattr(mux, "IDLE_S", 0.05)

    async def scenario() -> tuple[list, bool]:
        step, closed = Step(), list[str]()
        outbox = Outbox("ingress", 0.0)
        await outbox.start("f", reply(step, 1, closed, "f", fail=True))
        await step.advance()
        messages = [m async for m in outbox.pump()]  # ends once idle
        return messages, outbox.closed

    messages, closed = asyncio.run(scenario())
    assert messages == [{"f": [Body(b"f0", True), End("ConnectionError: runner died")]}] and not closed


def test_the_ingress_hands_each_stream_its_items_in_order_and_drops_unknown_ids() -> None:
    async def read(inbox: Inbox) -> list:
        return [part for batch in [b async for b in inbox] for part in batch]

    async def scenario() -> None:
        streams = Streams()
        a, b = streams.open(), streams.open()
        assert a.stream != b.stream and len(streams) == 2
        # A pump message may overtake start's answer: the first items still come first.
        assert streams.dispatch({a.stream: [Body(b"2", True)], "unknown": [Body(b"x", True)]}) == []
        a.put([Head(200, ()), Body(b"1", True)], first=True)
        ended = streams.dispatch({a.stream: [Body(b"", False), End()], b.stream: [Head(200, ())]})
        assert ended == [a.stream] and streams.dropped == 1 and len(streams) == 1 and a.complete
        assert await read(a) == [Head(200, ()), Body(b"1", True), Body(b"2", True), Body(b"", False)]
        # A stream whose app failed mid-reply, and one whose link failed: both raise after their parts.
        streams.dispatch({b.stream: [Body(b"x", True), End("RuntimeError: boom")]})
        got = []
        with pytest.raises(StreamFailed, match="boom"):
            async for batch in b:
                got += batch
        assert got == [Head(200, ()), Body(b"x", True)]
        c = streams.open()
        c.put([Head(200, ())], first=True)
        c.fail(ConnectionError("node died"))
        with pytest.raises(ConnectionError):
            await read(c)
        assert c.complete

    asyncio.run(scenario())


def test_autoscaling_counts_each_nodes_requests_not_the_ray_calls_that_carry_them() -> None:
    """A node's streams share one pump call per ingress: Serve's count of calls in flight no longer
    says the load, so the node reports its streams and the policy scales on those."""
    from types import SimpleNamespace

    from ray.serve.config import AutoscalingConfig

    from corral.cluster.node import REQUESTS, autoscaling
    from corral.config import Autoscale

    config = AutoscalingConfig(**autoscaling(Autoscale(1, 4, 2.0, 60.0)))
    config.policy.serialize_policy()  # as Serve does when it deploys: the function by import path
    policy = config.policy.get_policy()
    ctx = SimpleNamespace(current_num_replicas=2, target_num_replicas=2, config=config,
                          aggregated_metrics={REQUESTS: {"node-a": 4.0, "node-b": 3.0}})
    assert policy(ctx) == (3.5, {})  # 7 requests in flight, 2 a node: 3.5 replicas wanted
    ctx.aggregated_metrics = {}
    assert policy(ctx) == (0.0, {})  # idle (the bounds and delays are Serve's wrapper's)


def test_a_pump_whose_outbox_expires_fails_rather_than_ends() -> None:
    """Its link must fail the streams it carries (the client gets an error line), not pump again."""
    async def scenario() -> list:
        step, closed = Step(), list[str]()
        nodes = Mux()
        outbox = nodes.outbox("ingress", 0.0)
        await outbox.start("a", reply(step, 50, closed, "a"))
        got: list = []

        async def read() -> None:
            async for message in outbox.pump():
                got.append(message)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.01)
        assert nodes.expire(mux.LEASE_S * 10) == ["ingress"]
        with pytest.raises(ConnectionError, match="gave up"):
            await reader
        return closed

    assert asyncio.run(scenario()) == ["a"]


def test_an_ingress_given_up_on_learns_it_from_its_next_pump() -> None:
    """An ingress only slow (its pump came late): each cancelled stream gets an End with an error,
    so its client is told instead of waiting for ever."""
    async def scenario() -> tuple[dict, list[str]]:
        step, closed = Step(), list[str]()
        nodes = Mux()
        await nodes.outbox("slow", 0.0).start("a", reply(step, 50, closed, "a"))
        assert nodes.expire(mux.ATTACH_S + 1) == ["slow"]  # no pump came in time
        message = await anext(nodes.outbox("slow", mux.ATTACH_S + 2).pump())
        return message, closed

    message, closed = asyncio.run(scenario())
    assert closed == ["a"] and list(message) == ["a"]
    [end] = message["a"]
    assert isinstance(end, End) and end.error and "gave up" in end.error
