"""Cutting an over-long prompt down to what a context can use, before it reaches a runner.

A runner keeps the start token and the most recent tokens of a prompt longer than its context
(engine.submit). Everything older than `n_ctx * max_token_bytes` bytes from the end can never be
among those tokens, so dropping it here changes nothing the model sees, and spares the server and
the runner from rendering and tokenizing megabytes that would be thrown away.
"""

from __future__ import annotations

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
    while 0 < start < len(messages) and messages[start].get("role") == "tool":
        start -= 1  # never a tool result without the assistant turn that called the tool
    if start == 0:
        return messages
    return [m for m in messages[:start] if m.get("role") == "system"] + messages[start:]


def _size(message: dict[str, Any]) -> int:
    content = message.get("content")
    size = len(content.encode("utf-8", errors="surrogatepass")) if isinstance(content, str) else 0
    return size + 16  # the role and the template's markup around it
