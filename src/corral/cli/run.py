"""`corral run`: RunHandler in Ollama's cmd.go. Interactive only when stdin and stdout are both a
terminal and no prompt was given; otherwise one prompt (the arguments, after whatever stdin held)
answered once through /api/generate."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from corral.cli.client import Api, CliError, ServerError
from corral.cli.repl import Repl
from corral.cli.session import RunOptions, generate, load, parse_think
from corral.cli.verbs import transfer
from corral.config import FOREVER, Settings, parse_duration


def add_arguments(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("model", nargs="?", default=default_model)
    p.add_argument("prompt", nargs="*")
    p.add_argument("--keepalive", default="", help="Duration to keep a model loaded (e.g. 5m)")
    p.add_argument("--verbose", action="store_true", help="Show timings for response")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.add_argument("--nowordwrap", action="store_true", help="Don't wrap words to the next line automatically")
    p.add_argument("--format", default="", help="Response format (e.g. json)")
    p.add_argument("--think", default=None, metavar="true|false|high|medium|low",
                   help="Enable thinking mode: true/false or high/medium/low for supported models")
    p.add_argument("--hidethinking", action="store_true", help="Hide thinking output (if provided)")
    p.add_argument("--context-size", type=int, default=None, help="num_ctx for this session")


def bare_think(argv: list[str]) -> list[str]:
    """`--think` alone means true, and never takes the next word (pflag's NoOptDefVal)."""
    head, sep, rest = (argv[:argv.index("--")], ["--"], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [], [])
    return ["--think=true" if arg == "--think" else arg for arg in head] + sep + rest


def _format(text: str) -> str | dict[str, Any]:
    """--format json, or a JSON schema as the request's `format` takes it."""
    if text in ("", "json"):
        return text
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"invalid --format {text!r}: neither json nor a JSON schema ({exc})") from None
    if not isinstance(schema, dict):
        raise CliError(f"invalid --format {text!r}: a JSON schema is an object")
    return schema


def _keep_alive(text: str) -> str | int | None:
    if not text:
        return None
    try:
        seconds = parse_duration(text, 0)
    except ValueError:
        raise CliError(f'time: invalid duration "{text}"') from None
    return -1 if seconds == FOREVER else text


def _show_or_pull(api: Api, settings: Settings, model: str, insecure: bool) -> dict[str, Any]:
    """The model's details; a model the store lacks is pulled first, as Ollama's run does."""
    try:
        return api.show(model)
    except ServerError as exc:
        if exc.status != 404:
            raise
    transfer(settings, "/api/pull", model, insecure)
    return api.show(model)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    opts = RunOptions(model=args.model, format=_format(args.format), hide_thinking=args.hidethinking,
                      verbose=args.verbose, keep_alive=_keep_alive(args.keepalive))
    if args.context_size:
        opts.options["num_ctx"] = args.context_size
    think_explicit = args.think is not None
    if think_explicit:
        try:
            opts.think = parse_think(args.think)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    prompts = list(args.prompt)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped:
            prompts.insert(0, piped)
    opts.prompt = " ".join(prompts)
    interactive = interactive and not prompts
    # Ollama wraps into a pipe too (its width falls back to 80), leaving escape codes in files.
    opts.word_wrap = not args.nowordwrap and sys.stdout.isatty()
    with Api(settings) as api:
        api.wait_until_up(10)
        info = _show_or_pull(api, settings, opts.model, args.insecure)
        opts.infer_think(info, think_explicit)
        opts.apply_show(info)
        if interactive:
            load(api, opts)
            Repl(api, opts, think_explicit).run()
        else:
            generate(api, opts)
    return 0
