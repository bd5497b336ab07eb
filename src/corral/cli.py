"""`corral serve | run | pull | push | create | list | ps | show | rm | cp | stop | bench` — Ollama's verbs.

Thin: the verbs talk HTTP to the server (OLLAMA_HOST); `pull` fills the store directly when no
server runs, and `list` falls back to the store."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from corral.bench import command as bench_command
from corral.config import Settings
from corral.models import registry
from corral.models.catalog import DEFAULT_MODEL
from corral.models.modelfile import ModelfileError, is_local_path, parse_modelfile
from corral.models.store import InvalidName, ModelName, ModelNotFound, Store, sha256_file

console = Console(stderr=True)


def _client(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=settings.base_url, timeout=httpx.Timeout(10.0, read=None))


def _fail(message: str) -> int:
    console.print(f"[red]Error:[/red] {message}")
    return 1


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from corral.api.serve import serve

    console.print(f"corral listening on {settings.base_url} (models in {settings.models_dir})")
    serve(settings)
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Through the server (its store, its mirrors); with no server running, straight into the store."""
    try:
        _transfer(settings, "/api/pull", args.model, args.insecure)
    except httpx.ConnectError:
        _pull_here(settings, args.model, args.insecure)
    console.print("success")
    return 0


def _pull_here(settings: Settings, model: str, insecure: bool) -> None:
    store = Store(settings.models_dir)
    work = registry.prepare_pull(store, ModelName.parse(model), insecure, settings.registry_mirrors)
    with _Bars() as bars:
        work(lambda status, done, total, digest: bars.update(
            {"status": status, **({"total": total, "completed": done} if total else {}),
             **({"digest": digest} if digest else {})}))


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    """Send a Modelfile; a FROM naming a local file is uploaded as a blob first (as Ollama's CLI
    does), because the server reads no paths of its own unless told to (CORRAL_ALLOW_LOCAL_FROM)."""
    text = Path(args.file).read_text()
    mf = parse_modelfile(text)
    body: dict = {"model": args.model, "modelfile": text}
    source = Path(mf.source).expanduser()
    if not source.is_absolute():
        source = Path(args.file).resolve().parent / source
    if is_local_path(mf.source) and not source.is_file():
        raise ValueError(f"FROM {mf.source}: no such file ({source})")
    with _client(settings) as client:
        if is_local_path(mf.source):
            digest = sha256_file(source)
            if client.head(f"/api/blobs/{digest}").status_code != 200:
                with open(source, "rb") as f:
                    r = client.post(f"/api/blobs/{digest}", content=f)
                if r.status_code != 201:
                    _json(r)
            files = {source.name if source.name.endswith(".gguf") else "model.gguf": digest}
            body = {"model": args.model, "files": files, "template": mf.template, "system": mf.system,
                    "license": mf.license, "parameters": mf.parameters}
        for obj in _stream(client, "/api/create", body):
            console.print(obj["status"])
    return 0


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    _transfer(settings, "/api/push", args.model, args.insecure)
    console.print("success")
    return 0


def _transfer(settings: Settings, path: str, model: str, insecure: bool) -> None:
    """A registry pull or push through the server, with a progress bar per layer."""
    with _client(settings) as client, _Bars() as bars:
        for obj in _stream(client, path, {"model": model, "insecure": insecure}):
            bars.update(obj)


class _Bars:
    """Progress lines as `ollama pull` shows them: a bar per layer (digest), other statuses as text."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=console)
        self.tasks: dict[str, TaskID] = {}
        self.said: set[str] = set()

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def update(self, obj: dict) -> None:
        status, digest = obj.get("status", ""), obj.get("digest")
        if digest and obj.get("total"):
            if digest not in self.tasks:
                self.tasks[digest] = self.progress.add_task(status, total=obj["total"])
            self.progress.update(self.tasks[digest], description=status, completed=obj.get("completed", 0))
        elif status and status not in self.said and status != "success":  # the verb says it last
            self.said.add(status)
            self.progress.console.print(status)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None)
    try:
        with _client(settings) as client:
            models = _json(client.get("/api/tags"))["models"]
        rows = [(m["name"], m["digest"][:12], m["size"], m["modified_at"][:16].replace("T", " ")) for m in models]
    except httpx.TransportError:  # no server: read the store directly
        rows = [(m.name.short, m.digest[7:19], m.size, m.modified_at.strftime("%Y-%m-%d %H:%M"))
                for m in Store(settings.models_dir).list()]
    for name, digest, size, modified in rows:
        table.add_row(name, digest, f"{size / 1e6:.0f} MB", modified)
    Console().print(table)
    return 0


def _json(response: httpx.Response) -> dict:
    """The body of a successful reply; RuntimeError with the server's message otherwise."""
    if response.status_code != 200:
        try:
            raise RuntimeError(response.json().get("error", response.text))
        except json.JSONDecodeError:
            raise RuntimeError(response.text) from None
    return response.json() if response.content else {}


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        info = _json(client.post("/api/show", json={"model": args.model}))
    out = Console(highlight=False)
    if args.modelfile:
        out.print(info["modelfile"], markup=False)
    elif args.template:
        out.print(info["template"], markup=False)
    elif args.parameters:
        out.print(info.get("parameters", ""), markup=False)
    else:
        d, meta = info["details"], info.get("model_info", {})
        arch = d["family"]
        table = Table(box=None, show_header=False)
        for key, value in (("architecture", arch), ("parameters", d["parameter_size"]),
                           ("context length", meta.get(f"{arch}.context_length", "")),
                           ("embedding length", meta.get(f"{arch}.embedding_length", "")),
                           ("quantization", d["quantization_level"]),
                           ("capabilities", ", ".join(info.get("capabilities", [])))):
            table.add_row(f"  {key}", str(value))
        out.print("  Model")
        out.print(table)
    return 0


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        for model in args.models:
            _json(client.request("DELETE", "/api/delete", json={"model": model}))
            console.print(f"deleted '{model}'")
    return 0


def cmd_cp(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        _json(client.post("/api/copy", json={"source": args.source, "destination": args.destination}))
    console.print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def _stream(client: httpx.Client, path: str, body: dict) -> Iterator[dict]:
    with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            response.read()
            try:
                raise RuntimeError(response.json().get("error", response.text))
            except json.JSONDecodeError:
                raise RuntimeError(response.text) from None
        for line in response.iter_lines():
            if line:
                obj = json.loads(line)
                if "error" in obj:
                    raise RuntimeError(obj["error"])
                yield obj


def _chat_once(client: httpx.Client, model: str, messages: list[dict], options: dict,
               format: str | None = None, verbose: bool = False) -> str:
    out = Console(highlight=False)
    reply = []
    body = {"model": model, "messages": messages, "options": options}
    if format:
        body["format"] = format
    final: dict = {}
    for obj in _stream(client, "/api/chat", body):
        text = obj.get("message", {}).get("content", "")
        reply.append(text)
        out.print(text, end="", soft_wrap=True, markup=False)
        if obj.get("done"):
            final = obj
    out.print()
    if verbose and final:
        _print_stats(final)
    return "".join(reply)


def _print_stats(final: dict) -> None:
    """What `ollama run --verbose` prints after a reply."""
    ns = 1e9
    pe, pd = final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)
    ec, ed = final.get("eval_count", 0), final.get("eval_duration", 0)
    console.print(f"total duration:       {final.get('total_duration', 0) / ns:.3f}s")
    console.print(f"load duration:        {final.get('load_duration', 0) / ns:.3f}s")
    console.print(f"prompt eval count:    {pe} token(s)")
    console.print(f"prompt eval duration: {pd / ns:.3f}s")
    console.print(f"prompt eval rate:     {pe / (pd / ns) if pd else 0:.2f} tokens/s")
    console.print(f"eval count:           {ec} token(s)")
    console.print(f"eval duration:        {ed / ns:.3f}s")
    console.print(f"eval rate:            {ec / (ed / ns) if ed else 0:.2f} tokens/s")


def _wait_for_server(client: httpx.Client, seconds: float) -> bool:
    """A server started just before `run` (as in the README) may still be binding its port."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.get("/").status_code == 200
        except httpx.TransportError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    options = {"num_ctx": args.context_size} if args.context_size else {}
    with _client(settings) as client:
        if not _wait_for_server(client, seconds=10):
            return _fail(f"could not connect to corral at {settings.base_url}; is 'corral serve' running?")
        if client.post("/api/show", json={"model": args.model}).status_code == 404:
            _transfer(settings, "/api/pull", args.model, False)  # pulls if missing, as Ollama's run does
        if args.prompt:
            _chat_once(client, args.model, [{"role": "user", "content": " ".join(args.prompt)}], options,
                       args.format, args.verbose)
            return 0
        history: list[dict] = []
        console.print("Send a message (/bye to exit)")
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                return 0
            if line.strip() == "/bye":
                return 0
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            history.append({"role": "assistant", "content": _chat_once(client, args.model, history, options,
                                                                       args.format, args.verbose)})


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        try:
            models = client.get("/api/ps").json()["models"]
        except httpx.TransportError:
            return _fail(f"could not connect to corral at {settings.base_url}")
    table = Table("NAME", "ID", "SIZE", "MEASURED", "PROCESSOR", "CONTEXT", "SLOTS", "QUEUE", "UNTIL", box=None)
    for m in models:
        processor = "100% GPU" if m["size_vram"] else "100% CPU"
        table.add_row(m["name"], m["digest"][:12], f"{m['size'] / 1e6:.0f} MB", f"{m['size_measured'] / 1e6:.0f} MB",
                      processor, str(m["context_length"]), f"{m['slots_busy']}/{m['slots_total']}",
                      str(m["queue"]), m["expires_at"][:19].replace("T", " "))
    Console().print(table)
    return 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings) as client:
        r = client.post("/api/generate", json={"model": args.model, "keep_alive": 0})
        if r.status_code != 200:
            return _fail(r.json().get("error", r.text))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral", description="A local LLM server that speaks Ollama's API.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the server").set_defaults(func=cmd_serve)
    p = sub.add_parser("run", help="run a model: one prompt, or an interactive chat")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("prompt", nargs="*")
    p.add_argument("--context-size", type=int, default=None, help="num_ctx for this session")
    p.add_argument("--format", choices=["json"], default=None, help="answer in JSON")
    p.add_argument("--verbose", action="store_true", help="print timings after each reply")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("pull", help="download a model: llama3.2:1b, user/model:tag, hf.co/USER/REPO[:QUANT], "
                                    "host[:port]/namespace/model:tag")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="plain http to the registry")
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("create", help="create a model from a Modelfile")
    p.add_argument("model")
    p.add_argument("-f", "--file", default="Modelfile")
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("push", help="upload a model to the registry its name names")
    p.add_argument("model")
    p.add_argument("--insecure", action="store_true", help="plain http to the registry")
    p.set_defaults(func=cmd_push)
    sub.add_parser("list", aliases=["ls"], help="list models in the store").set_defaults(func=cmd_list)
    sub.add_parser("ps", help="list loaded models, their slots and queues").set_defaults(func=cmd_ps)
    p = sub.add_parser("show", help="show a model's details")
    p.add_argument("model")
    for flag in ("--modelfile", "--parameters", "--template"):
        p.add_argument(flag, action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("rm", help="remove models")
    p.add_argument("models", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("cp", help="copy a model")
    p.add_argument("source")
    p.add_argument("destination")
    p.set_defaults(func=cmd_cp)
    p = sub.add_parser("bench", help="serving benchmark against an Ollama- or OpenAI-API endpoint")
    bench_command.add_arguments(p, Settings.from_env().base_url, DEFAULT_MODEL)
    p.set_defaults(func=lambda args, settings: bench_command.main(args))
    p = sub.add_parser("stop", help="unload a running model")
    p.add_argument("model")
    p.set_defaults(func=cmd_stop)
    args = parser.parse_args(argv)
    try:
        return args.func(args, Settings.from_env())
    except (InvalidName, ModelNotFound, ModelfileError, OSError, RuntimeError, ValueError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
