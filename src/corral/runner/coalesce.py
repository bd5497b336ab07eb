"""The stream interval: a request's text goes up the pipe at most once per interval.

Every write to the pipe wakes the server, which wakes the client; on a machine whose cores all
run llama.cpp threads each wake-up preempts one of them (docs/PERFORMANCE.md "The token path").
With an interval, the tokens of the steps in between are held and sent as one Token message (as
vLLM's `--stream-interval`, in time rather than tokens). A request's first text is never held (time
to first token), and its held text always goes out before its Done or Failed. Interval 0: every
step's tokens go out at once, as without this module.
"""

from __future__ import annotations

from corral.runner.protocol import Done, Failed, Token, Up


def merge(a: Token, b: Token) -> Token:
    """Two consecutive Token messages of one request as one."""
    if a.logprobs is None and b.logprobs is None:
        return Token(a.id, a.text + b.text)
    return Token(a.id, a.text + b.text, (a.logprobs or []) + (b.logprobs or []))


class Coalescer:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._held: dict[str, Token] = {}
        self._sent: dict[str, float] = {}  # request id → when its text last went out

    def take(self, events: list[Up], now: float) -> list[Up]:
        """What to send now of a step's events (in their order); the rest is held."""
        if self.interval_s <= 0:
            return events
        out: list[Up] = []
        for event in events:
            if isinstance(event, Token):
                held = self._held.pop(event.id, None)
                event = merge(held, event) if held else event
                last = self._sent.get(event.id)
                if last is not None and now - last < self.interval_s:
                    self._held[event.id] = event
                    continue
                self._sent[event.id] = now
            elif isinstance(event, (Done, Failed)):
                self._sent.pop(event.id, None)
                held = self._held.pop(event.id, None)
                if held:
                    out.append(held)
            out.append(event)
        # Text held by an earlier step whose interval has run out (this step had none for it).
        for request_id in [r for r, t in self._sent.items() if r in self._held and now - t >= self.interval_s]:
            out.append(self._held.pop(request_id))
            self._sent[request_id] = now
        return out
