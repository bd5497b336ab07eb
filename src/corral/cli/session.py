"""One `corral run` session's state (runOptions in Ollama's cmd.go) and its two ways of asking:
`generate` for a one-shot prompt, `chat` for the interactive conversation."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any

from corral.cli.client import Api
from corral.cli.output import WordWrap, summary

Think = bool | str | None  # None: not sent; a level string ("low", "medium", "high", "max") or a bool
THINK_VALUES: dict[str, bool | str] = {"": True, "true": True, "false": False, "high": "high", "medium": "medium",
                                      "low": "low", "max": "max"}
GREY, BOLD, DEFAULT = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"


def parse_think(text: str) -> bool | str:
    if text not in THINK_VALUES:
        raise ValueError(f'invalid value for --think: "{text}" (must be true, false, high, medium, low, or max)')
    return THINK_VALUES[text]


@dataclass
class RunOptions:
    model: str
    parent_model: str = ""
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)  # the model's MESSAGE layer
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    system: str = ""
    format: str | dict[str, Any] = ""  # "json", or a JSON schema
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: str | int | None = None
    think: Think = None
    hide_thinking: bool = False
    word_wrap: bool = True
    verbose: bool = False

    def copy(self) -> RunOptions:
        return replace(self, loaded_messages=list(self.loaded_messages), messages=list(self.messages),
                       options=dict(self.options))

    def apply_show(self, info: dict[str, Any]) -> None:
        self.parent_model = str((info.get("details") or {}).get("parent_model") or "")
        self.loaded_messages = list(info.get("messages") or [])

    def infer_think(self, info: dict[str, Any], explicit: bool) -> None:
        """Thinking on by default for a model that can think, unless the user said otherwise."""
        if not explicit:
            self.think = True if "thinking" in (info.get("capabilities") or []) else None

    def body(self) -> dict[str, Any]:
        """The fields generate and chat requests share."""
        body: dict[str, Any] = {"model": self.model, "options": self.options}
        if self.format:
            body["format"] = self.format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        if self.think is not None:
            body["think"] = self.think
        return body


class _Printer:
    """Thinking (grey, between "Thinking..." and "...done thinking.") then content, word-wrapped."""

    def __init__(self, opts: RunOptions, plain: bool) -> None:
        self.opts, self.plain = opts, plain
        self.wrap = WordWrap(opts.word_wrap)
        self.thinking: list[str] = []
        self.open = False

    def add(self, content: str, thinking: str) -> None:
        if thinking and not self.opts.hide_thinking:
            if not self.open:
                sys.stdout.write("Thinking...\n" if self.plain else f"{GREY}{BOLD}Thinking...\n{DEFAULT}{GREY}")
                self.open = True
            self.thinking.append(thinking)
            self.wrap.write(thinking)
        if self.open and content:
            if not "".join(self.thinking).endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.write("...done thinking.\n\n" if self.plain else f"{GREY}{BOLD}...done thinking.\n\n{DEFAULT}")
            self.open = False
            self.wrap = WordWrap(self.opts.word_wrap)
        if content:
            self.wrap.write(content)


def _finish(final: dict[str, Any], opts: RunOptions, said_something: bool) -> None:
    if said_something:
        sys.stdout.write("\n\n")
    sys.stdout.flush()
    if opts.verbose and final.get("done"):
        sys.stderr.write(summary(final))
        sys.stderr.flush()


def generate(api: Api, opts: RunOptions) -> None:
    """A one-shot prompt through /api/generate (what `ollama run MODEL PROMPT` sends)."""
    body = {**opts.body(), "prompt": opts.prompt}
    if opts.system:
        body["system"] = opts.system
    printer, final = _Printer(opts, plain=not sys.stdout.isatty()), {}
    try:
        for obj in api.stream("/api/generate", body):
            printer.add(str(obj.get("response") or ""), str(obj.get("thinking") or ""))
            final = obj
    except KeyboardInterrupt:  # Ctrl+C stops the answer, not the program
        return
    _finish(final, opts, bool(opts.prompt))


def chat(api: Api, opts: RunOptions) -> dict[str, Any] | None:
    """One turn of the conversation; the assistant's message, or None when Ctrl+C stopped it."""
    printer, final = _Printer(opts, plain=False), {}
    content: list[str] = []
    try:
        for obj in api.stream("/api/chat", {**opts.body(), "messages": opts.messages}):
            message = obj.get("message") or {}
            printer.add(str(message.get("content") or ""), str(message.get("thinking") or ""))
            content.append(str(message.get("content") or ""))
            final = obj
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return None
    _finish(final, opts, bool(opts.messages))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if printer.thinking:
        reply["thinking"] = "".join(printer.thinking)
    return reply


def load(api: Api, opts: RunOptions) -> None:
    """Load the model before the first prompt (an empty generate, as Ollama's loadOrUnloadModel)."""
    body: dict[str, Any] = {"model": opts.model}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        body["think"] = opts.think
    for _ in api.stream("/api/generate", body):
        pass
