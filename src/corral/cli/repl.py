"""`corral run MODEL` on a terminal: the interactive session of Ollama's interactive.go, its
commands (/set, /show, /load, /save, /clear, /bye, /?), its messages and its \"\"\" blocks."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

from corral.cli import help
from corral.cli.client import Api, ServerError
from corral.cli.output import WordWrap, go_value, table
from corral.cli.session import RunOptions, chat, load
from corral.cli.show import show_info
from corral.cli.verbs import list_rows
from corral.models.modelfile import ModelfileError, add_parameter

QUOTES = '"""'


class Multiline(Enum):
    NONE = 0
    PROMPT = 1
    SYSTEM = 2


def _cut_suffix(text: str, suffix: str) -> tuple[str, bool]:
    return (text[: -len(suffix)], True) if text.endswith(suffix) else (text, False)


def _history(enabled: bool) -> None:
    """GNU readline keeps the session's lines (up-arrow) when stdin is a terminal."""
    try:
        import readline
    except ImportError:
        return
    readline.set_auto_history(enabled)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _usage(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


class Repl:
    def __init__(self, api: Api, opts: RunOptions, think_explicit: bool) -> None:
        self.api, self.opts, self.think_explicit = api, opts, think_explicit
        self.buffer, self.multiline, self.alt = "", Multiline.NONE, False

    def run(self) -> None:
        if sys.stdin.isatty():
            _history(True)
        self._replay_loaded_messages()
        while True:
            try:
                line = input("... " if self.alt else ">>> ")
            except EOFError:
                _say("")
                return
            except KeyboardInterrupt:
                if not self.buffer:
                    _say("\nUse Ctrl + d or /bye to exit.")
                self.alt, self.buffer = False, ""
                continue
            if not self.step(line):
                return

    def _replay_loaded_messages(self) -> None:
        for message in self.opts.loaded_messages:
            if message.get("role") == "user":
                _say(f">>> {message.get('content', '')}")
            elif message.get("role") == "assistant":
                WordWrap(self.opts.word_wrap).write(str(message.get("content", "")))
                _say("\n")

    def step(self, line: str) -> bool:
        """One line typed; False when the session ends."""
        if self.multiline is not Multiline.NONE:
            before, done = _cut_suffix(line, QUOTES)
            self.buffer += before
            if not done:
                self.buffer += "\n"
                self.alt = True
                return True
            if self.multiline is Multiline.SYSTEM:
                self.opts.system = self.buffer
                self.opts.messages.append({"role": "system", "content": self.opts.system})
                _say("Set system message.")
                self.buffer = ""
            self.multiline, self.alt = Multiline.NONE, False
        elif line.startswith(QUOTES):
            text, done = _cut_suffix(line[len(QUOTES):], QUOTES)
            self.buffer += text
            if not done:
                self.buffer += "\n"
                self.multiline, self.alt = Multiline.PROMPT, True
        elif line.startswith("/"):
            return self._command(line)
        else:
            self.buffer += line
        if self.buffer and self.multiline is Multiline.NONE:
            self._send()
        return True

    def _send(self) -> None:
        self.opts.messages.append({"role": "user", "content": self.buffer})
        self.buffer = ""
        try:
            reply = chat(self.api, self.opts)
        except ServerError as exc:
            if "does not support thinking" not in str(exc) and "invalid think value" not in str(exc):
                raise
            _say(f"error: {exc}")
            return
        if reply is not None:
            self.opts.messages.append(reply)

    def _command(self, line: str) -> bool:
        args = line.split()
        for prefix, handler in (("/list", self._list), ("/load", self._load), ("/save", self._save),
                                ("/clear", self._clear), ("/set", self._set), ("/show", self._show),
                                ("/help", self._help), ("/?", self._help)):
            if line.startswith(prefix):
                handler(args)
                return True
        if line.startswith(("/exit", "/bye")):
            return False
        _say(f"Unknown command '{args[0]}'. Type /? for help")
        return True

    def _list(self, args: list[str]) -> None:
        models = self.api.request("GET", "/api/tags").get("models", [])
        sys.stdout.write(table(list_rows(models, args[1:]), ["NAME", "ID", "SIZE", "MODIFIED"]))

    def _load(self, args: list[str]) -> None:
        if len(args) != 2:
            _say("Usage:\n  /load <modelname>")
            return
        original = self.opts.copy()
        self.opts.model, self.opts.messages, self.opts.loaded_messages = args[1], [], []
        _say(f"Loading model '{self.opts.model}'")
        try:
            info = self.api.show(self.opts.model)
            self.opts.apply_show(info)
            self.opts.infer_think(info, self.think_explicit)
            load(self.api, self.opts)
        except ServerError as exc:
            if "not found" not in str(exc):
                raise
            _say(f"Couldn't find model '{self.opts.model}'")
            self.opts = original

    def _save(self, args: list[str]) -> None:
        if len(args) != 2:
            _say("Usage:\n  /save <modelname>")
            return
        body: dict[str, Any] = {"model": args[1], "from": self.opts.parent_model or self.opts.model}
        if self.opts.system:
            body["system"] = self.opts.system
        if self.opts.options:
            body["parameters"] = self.opts.options
        messages = [{"role": m["role"], "content": m.get("content", "")}
                    for m in self.opts.loaded_messages + self.opts.messages]
        if messages:
            body["messages"] = messages
        try:
            for _ in self.api.stream("/api/create", body):
                pass
        except ServerError as exc:
            if "invalid model name" not in str(exc):
                raise
            _say(f"error: The model name '{args[1]}' is invalid")
            return
        _say(f"Created new model '{args[1]}'")

    def _clear(self, args: list[str]) -> None:
        self.opts.messages = [{"role": "system", "content": self.opts.system}] if self.opts.system else []
        _say("Cleared session context")

    def _set(self, args: list[str]) -> None:
        if len(args) < 2:
            _usage(help.USAGE_SET)
            return
        what = args[1]
        if what in ("history", "nohistory"):
            _history(what == "history")
        elif what in ("wordwrap", "nowordwrap"):
            self.opts.word_wrap = what == "wordwrap"
            _say(f"Set '{what}' mode.")
        elif what in ("verbose", "quiet"):
            self.opts.verbose = what == "verbose"
            _say(f"Set '{what}' mode.")
        elif what in ("think", "nothink"):
            self._think(what == "think", args[2] if len(args) > 2 and what == "think" else "")
        elif what == "format":
            if len(args) < 3 or args[2] != "json":
                _say("Invalid or missing format. For 'json' mode use '/set format json'")
            else:
                self.opts.format = args[2]
                _say(f"Set format to '{args[2]}' mode.")
        elif what == "noformat":
            self.opts.format = ""
            _say("Disabled format.")
        elif what == "parameter":
            self._parameter(args[2:])
        elif what == "system":
            self._system(args[2:])
        else:
            _say(f"Unknown command '/set {what}'. Type /? for help")

    def _think(self, on: bool, level: str) -> None:
        self.opts.think = (level or True) if on else False
        self.think_explicit = True
        try:
            if "thinking" not in (self.api.show(self.opts.model).get("capabilities") or []):
                sys.stderr.write(f'warning: model "{self.opts.model}" does not support thinking output\n')
        except ServerError:
            pass
        if not on:
            _say("Set 'nothink' mode.")
        else:
            _say(f"Set 'think' mode to '{level}'." if level else "Set 'think' mode.")

    def _parameter(self, args: list[str]) -> None:
        if len(args) < 2:
            _usage(help.USAGE_PARAMETERS)
            return
        key, values = args[0], args[1:]
        parsed: dict[str, Any] = {}
        try:
            for value in values if key == "stop" else values[:1]:
                add_parameter(parsed, key, value)
        except ModelfileError as exc:
            _say(f"Couldn't set parameter: {json.dumps(str(exc))}")
            return
        _say(f"Set parameter '{key}' to '{', '.join(values)}'")
        self.opts.options[key] = parsed[key]

    def _system(self, args: list[str]) -> None:
        if not args:
            _usage(help.USAGE_SET)
            return
        text = " ".join(args)
        if text.startswith(QUOTES):
            text, done = _cut_suffix(text[len(QUOTES):], QUOTES)
            if not done:  # (Ollama's own loses this line break, joining the first two lines)
                self.buffer += text + "\n"
                self.multiline, self.alt = Multiline.SYSTEM, True
                return
        self.opts.system = self.buffer + text
        self.buffer = ""
        message = {"role": "system", "content": self.opts.system}
        if self.opts.messages and self.opts.messages[-1]["role"] == "system":
            self.opts.messages[-1] = message
        else:
            self.opts.messages.append(message)
        _say("Set system message.")

    def _show(self, args: list[str]) -> None:
        if len(args) < 2:
            _usage(help.USAGE_SHOW)
            return
        try:
            info = self.api.show(self.opts.model)
        except ServerError:
            _say("error: couldn't get model")
            raise
        what = args[1]
        if what == "info":
            _usage(show_info(info))
        elif what == "license":
            _say(info.get("license") or "No license was specified for this model.")
        elif what == "modelfile":
            _say(info.get("modelfile", ""))
        elif what == "parameters":
            self._show_parameters(str(info.get("parameters") or ""))
        elif what == "system":
            system = self.opts.system or info.get("system")
            _say(f"{system}\n" if system else "No system message was specified for this model.")
        elif what == "template":
            _say(info.get("template") or "No prompt template was specified for this model.")
        else:
            _say(f"Unknown command '/show {what}'. Type /? for help")

    def _show_parameters(self, model_parameters: str) -> None:
        _say("Model defined parameters:")
        if not model_parameters:
            _say("  No additional parameters were specified for this model.")
        for line in model_parameters.splitlines():
            _say(f"  {line}")
        _say("")
        if self.opts.options:
            _say("User defined parameters:")
            for key, value in self.opts.options.items():
                _say(f"  {key:<30} {go_value(value)}")
            _say("")

    def _help(self, args: list[str]) -> None:
        if len(args) < 2:
            _usage(help.USAGE)
            return
        text = {"set": help.USAGE_SET, "/set": help.USAGE_SET, "show": help.USAGE_SHOW, "/show": help.USAGE_SHOW,
                "shortcut": help.USAGE_SHORTCUTS, "shortcuts": help.USAGE_SHORTCUTS}.get(args[1])
        if text:
            _usage(text)
