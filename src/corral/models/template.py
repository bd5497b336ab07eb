"""Chat prompts from a model's template: a GGUF's Jinja chat template, rendered only in an
immutable sandbox, or an Ollama TEMPLATE (Go text/template), rendered as Ollama renders it.

A template is untrusted input (llama-cpp-python's CVE-2024-34359 ran code through one), so it
never sees anything but plain data and a few harmless helpers. Go templates run in corral's own
interpreter (models/gotemplate), which can only read the values it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.errors import ClientError
from corral.models.gotemplate import GoTemplateError
from corral.models.gotemplate.nodes import ListNode
from corral.models.gotemplate.ollama import OllamaTemplate, Values


class TemplateError(ClientError):
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


def check_template(source: str) -> None:
    """Check that a template compiles, as Go or as Jinja (TemplateError naming Go's complaint
    for a template with no Jinja tags, which is what a Modelfile's TEMPLATE usually is)."""
    if is_go_template(source):
        return
    try:
        _compile(source)
    except TemplateError:
        if "{%" in source or "{#" in source:
            raise
        _compile_go(source)  # raises the Go parser's error
        raise


def render_chat(template: str | None, messages: list[dict[str, Any]], *, bos_token: str = "",
                eos_token: str = "", tools: list[dict] | None = None,
                think: bool | str | None = None) -> ChatPrompt:
    """A Jinja chat template's prompt. `think` reaches it as Ollama hands it to llama.cpp's
    templates (chat_template_kwargs): enable_thinking, and reasoning_effort for a level."""
    if not template:
        return _fallback(messages)
    kwargs: dict[str, Any] = {}
    if think is not None:
        kwargs["enable_thinking"] = think is True or isinstance(think, str)
        if isinstance(think, str):
            kwargs["reasoning_effort"] = think
    # As Ollama's llama-server messages: a tool result's tool_name is its `name`.
    messages = [{**m, "name": m["tool_name"]} if m.get("tool_name") and "name" not in m else m
                for m in messages]
    try:
        text = _compile(template).render(messages=messages, add_generation_prompt=True,
                                         bos_token=bos_token, eos_token=eos_token, tools=tools,
                                         **kwargs)
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


# ---- Ollama's Go templates (TEMPLATE layers, Modelfile TEMPLATEs)

@lru_cache(maxsize=32)
def _compile_go(source: str) -> OllamaTemplate:
    try:
        return OllamaTemplate(source)
    except (GoTemplateError, RecursionError) as exc:
        raise TemplateError(f"invalid template: {exc}") from None


def _execute_go(template: str, values: Values) -> ChatPrompt:
    compiled = _compile_go(template)
    try:
        return ChatPrompt(compiled.execute(values))
    except GoTemplateError as exc:
        raise TemplateError(str(exc)) from None
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise TemplateError(f"template failed: {exc}") from None


def go_template_tree(source: str) -> ListNode:
    """A Go template's main tree (as Ollama's tools.parseTag and thinking.InferTags walk it)."""
    return _compile_go(source).trees[""]


def go_template_variables(source: str) -> list[str]:
    """The lowercased names of the fields a Go template reads (Ollama's Template.Vars)."""
    return list(_compile_go(source).vars)


def is_go_template(text: str) -> bool:
    """Whether a template is Go's text/template rather than Jinja.

    Ollama never guesses: a manifest's TEMPLATE layer is Go, a GGUF's tokenizer.chat_template is
    Jinja. This is for text whose origin is unknown: Jinja's {% %} or {# #} tags mean Jinja;
    otherwise it is Go if it parses as one (Jinja's {{ messages[0] }} or {{ bos_token }} do not).
    """
    if "{%" in text or "{#" in text:
        return False
    try:
        _compile_go(text)
    except TemplateError:
        return False
    return True


def render_go(template: str, messages: list[dict[str, Any]], *, system: str = "",
              tools: list[dict[str, Any]] | None = None, think: bool | str | None = None) -> ChatPrompt:
    """/api/chat's prompt from a Go template, byte for byte as Ollama's.

    messages: the request's (after any MESSAGE layers of the model), as dicts with role, content
    and optionally images (base64), tool_calls, thinking, tool_name, tool_call_id. system: the
    model's SYSTEM, put first when the messages do not start with a system message (Ollama's
    rule). tools: None when the request has none ([] renders differently: `{{ .Tools }}` is "[]").
    think: the request's think (None, a bool or "high"/"medium"/"low"/"max").
    """
    msgs = list(messages)
    if system and (not msgs or msgs[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return _execute_go(template, Values.with_think(msgs, think, tools=tools))


def render_go_generate(template: str, prompt: str, *, system: str = "", suffix: str = "",
                       history: list[dict[str, Any]] | None = None, images: list[str] | None = None,
                       think: bool | str | None = None,
                       tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
    """/api/generate's prompt from a Go template, as Ollama's GenerateHandler builds it.

    With a suffix the template sees only Prompt and Suffix (fill-in-the-middle; if the prompt is
    empty that is no messages at all). Otherwise the messages are: system (the request's, else the
    model's SYSTEM), then history (the model's MESSAGE layers), then the prompt as a user message
    with its images. tools: Ollama passes [] here (an empty, non-nil list); None only when the
    request brings its own `template`.
    """
    if suffix:
        return _execute_go(template, Values.with_think([], think, prompt=prompt, suffix=suffix))
    msgs: list[dict[str, Any]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.extend(history or ())
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if images:
        user["images"] = list(images)
    msgs.append(user)
    return _execute_go(template, Values.with_think(msgs, think, tools=[] if tools is None else tools))
