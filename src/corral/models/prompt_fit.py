"""Cutting an over-long prompt down to what a context can use, before it reaches a runner.

A runner keeps the start token and the most recent tokens of a prompt longer than its context
(engine.submit). Everything older than `n_ctx * max_token_bytes` bytes from the end can never be
among those tokens, so dropping it here changes nothing the model sees, and spares the server and
the runner from rendering and tokenizing megabytes that would be thrown away.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def byte_budget(n_ctx: int, max_token_bytes: int) -> int:
    """Bytes of prompt text that can matter to a context of n_ctx tokens."""
    return max(n_ctx, 1) * max(max_token_bytes, 1)


def tail_text(text: str, budget: int) -> str:
    """The last `budget` bytes of `text` (whole characters only)."""
    if len(text) * 4 <= budget:  # at most 4 bytes a character: no need to encode
        return text
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= budget:
        return text
    return data[-budget:].decode("utf-8", errors="ignore")


def trim_messages(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Drop the oldest non-system messages that lie wholly beyond `budget` bytes from the end.

    As Ollama's chatPrompt: system messages and the latest message always stay; older turns go
    first. The kept suffix still holds at least `budget` bytes when there were that many, so the
    tokens the runner keeps are the same as with every message.
    """
    if len(messages) < 2:
        return messages
    used = 0
    start = len(messages)
    while start > 0 and used < budget:
        start -= 1
        used += _size(messages[start])
    start = _turn_start(messages, start)
    if start <= 0:
        return messages
    return _from(messages, start)


def _turn_start(messages: list[dict[str, Any]], index: int) -> int:
    """Where the turn holding messages[index] starts: a tool result goes with the assistant turn
    that called the tool (Ollama's toolBlockStartIndex)."""
    if index <= 0 or index >= len(messages) or messages[index].get("role") != "tool":
        return index
    start = index
    while start > 0 and messages[start - 1].get("role") == "tool":
        start -= 1
    caller = start - 1
    if caller >= 0 and messages[caller].get("role") == "assistant" and messages[caller].get("tool_calls"):
        return caller
    return index


def _from(messages: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """The messages from `start` on, after the system messages before it."""
    return [m for m in messages[:start] if m.get("role") == "system"] + messages[start:]


async def fit_chat(messages: list[dict[str, Any]], render: Callable[[list[dict[str, Any]]], Awaitable[str]],
                   fits: Callable[[str], Awaitable[bool]]) -> str:
    """Ollama's chatPrompt: the rendering of the most recent messages that fits the context,
    always with the system messages and the latest message (and its tool turn).

    Ollama drops one message at a time from the front until the prompt fits. A prompt only
    grows as messages are kept, so the same cut is found by keeping 1, 2, 4, ... of the latest
    messages until one does not fit, then halving the last step: each rendering is at most
    about twice what fits, however long the conversation.
    """
    n = len(messages)

    def keep(k: int) -> list[dict[str, Any]]:
        return messages if k >= n else _from(messages, _turn_start(messages, n - k))

    fitting: str | None = None
    good, k = 0, 1
    while True:
        candidate = await render(keep(k))
        if not await fits(candidate):
            break
        fitting, good = candidate, k
        if k >= n:
            return candidate
        k = min(2 * k, n)
    bad = k
    while bad - good > 1:
        mid = (good + bad) // 2
        candidate = await render(keep(mid))
        if await fits(candidate):
            fitting, good = candidate, mid
        else:
            bad = mid
    if fitting is None:  # not even the latest message fits: the runner keeps its tail
        fitting = await render(keep(1))
    return fitting


def _size(message: dict[str, Any]) -> int:
    content = message.get("content")
    size = len(content.encode("utf-8", errors="surrogatepass")) if isinstance(content, str) else 0
    return size + 16  # the role and the template's markup around it
