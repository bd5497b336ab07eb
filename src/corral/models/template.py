"""Chat prompts from a GGUF's Jinja chat template, rendered only in an immutable sandbox.

A template is untrusted input (llama-cpp-python's CVE-2024-34359 ran code through one), so it
never sees anything but plain data and a few harmless helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """The template failed to render these messages (it may reject them on purpose)."""


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    stop: tuple[str, ...] = ()  # stop strings the rendering implies (the fallback's turn markers)


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        undefined=jinja2.ChainableUndefined)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"invalid chat template: {exc}") from None


def render_chat(template: str | None, messages: list[dict[str, Any]], *, bos_token: str = "",
                eos_token: str = "", tools: list[dict] | None = None) -> ChatPrompt:
    if not template:
        return _fallback(messages)
    try:
        text = _compile(template).render(messages=messages, add_generation_prompt=True,
                                         bos_token=bos_token, eos_token=eos_token, tools=tools)
    except TemplateError:
        raise
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise TemplateError(f"chat template failed: {exc}") from None
    return ChatPrompt(text)


def _fallback(messages: list[dict[str, Any]]) -> ChatPrompt:
    """A model without a template (a base model) gets a plain transcript to continue.

    Ending on "Assistant:" and stopping at the next "User:" turn keeps a base model's
    continuation to one reply instead of writing both sides of the conversation.
    """
    lines = []
    for message in messages:
        role = str(message.get("role", "user")).capitalize()
        lines.append(f"{role}: {message.get('content') or ''}")
    lines.append("Assistant:")
    return ChatPrompt("\n\n".join(lines), stop=("\nUser:", "\n\nUser:"))
