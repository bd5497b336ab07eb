"""`corral serve | run | pull | push | create | list | ps | top | show | rm | cp | stop | bench`: the
arguments, the dispatch, and the one rule for failures: `Error: ...` on stderr, exit 1, no traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import httpx

from corral.bench import command as bench_command
from corral.cli import run, verbs
from corral.cli.client import CliError, no_server
from corral.cli.top import cmd_top
from corral.config import Settings
from corral.errors import CorralError
from corral.models.catalog import DEFAULT_MODEL


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad flag or a missing argument: one line, as cobra says it."""
        sys.stderr.write(f"Error: {message}\n")
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="corral", description="A local LLM server that speaks Ollama's API.")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="start the server")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="serve through a Ray cluster (its address, or auto): one corral node per machine "
                        "with the corral_node resource (docs/CLUSTER.md)")
    p.set_defaults(func=verbs.cmd_serve)
    p = sub.add_parser("run", help="run a model: one prompt, or an interactive chat")
    run.add_arguments(p, DEFAULT_MODEL)
    p.set_defaults(func=run.cmd_run)
    p = sub.add_parser("pull", help="download a model: llama3.2:1b, user/model:tag, hf.co/USER/REPO[:QUANT], "
                                    "host[:port]/namespace/model:tag")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.set_defaults(func=verbs.cmd_pull)
    p = sub.add_parser("create", help="create a model from a Modelfile")
    p.add_argument("model")
    p.add_argument("-f", "--file", default="Modelfile", help='Name of the Modelfile (default "Modelfile")')
    p.set_defaults(func=verbs.cmd_create)
    p = sub.add_parser("push", help="upload a model to the registry its name names")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="Use an insecure registry")
    p.set_defaults(func=verbs.cmd_push)
    p = sub.add_parser("list", aliases=["ls"], help="list models")
    p.add_argument("prefix", nargs="?", default=None, help="only the names that start with this")
    p.set_defaults(func=verbs.cmd_list)
    p = sub.add_parser("ps", help="list running models")
    p.add_argument("prefix", nargs="?", default=None, help="only the names that start with this")
    p.set_defaults(func=verbs.cmd_ps)
    p = sub.add_parser("show", help="show information for a model")
    p.add_argument("model")
    for flag in verbs.SHOW_FLAGS:
        p.add_argument(f"--{flag}", action="store_true", help=f"Show {flag} of a model")
    p.set_defaults(func=verbs.cmd_show)
    p = sub.add_parser("rm", help="remove models")
    p.add_argument("models", nargs="+")
    p.set_defaults(func=verbs.cmd_rm)
    p = sub.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=verbs.cmd_cp)
    p = sub.add_parser("bench", help="serving benchmark against an Ollama- or OpenAI-API endpoint")
    bench_command.add_arguments(p, Settings.from_env().base_url, DEFAULT_MODEL)
    p.set_defaults(func=lambda args, settings: bench_command.main(args))
    sub.add_parser("top", help="watch the scheduler live: models, slots, queue, tokens/s, events "
                              "(Ctrl-C quits)").set_defaults(func=cmd_top)
    p = sub.add_parser("stop", help="stop a running model")
    p.add_argument("model")
    p.set_defaults(func=verbs.cmd_stop)
    return top


def _fail(message: str) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"Error: {message}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    settings: Settings | None = None
    try:
        top = parser()
        args, extra = top.parse_known_args(run.bare_think(sys.argv[1:] if argv is None else argv))
        # Words after a flag are still the prompt (cobra takes flags anywhere): `run M hi --verbose there`.
        if extra and (args.command != "run" or any(word.startswith("-") for word in extra)):
            top.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:
            args.prompt += extra
        # A list/ps prefix arrives as one optional string; the verbs take a sequence.
        if hasattr(args, "prefix"):
            args.prefix = [args.prefix] if args.prefix else []
        settings = Settings.from_env()
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except httpx.ConnectError:
        return _fail(str(no_server(settings)) if settings else "could not connect to corral server")
    except (CliError, CorralError, httpx.HTTPError, OSError, ValueError) as exc:
        return _fail(str(exc) or type(exc).__name__)
