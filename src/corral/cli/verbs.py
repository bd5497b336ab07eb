"""The verbs other than `run`: serve, pull, push, create, list, ps, show, rm, cp, stop.

Thin: each talks HTTP to the server (OLLAMA_HOST); `pull` fills the store directly when no
server runs, and `list` falls back to the store. What they print goes to stdout as Ollama's
verbs print it; progress goes to stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from corral.cli.client import Api, CliError, NoServer, ServerError, check_reply
from corral.cli.output import human_bytes, human_time, table
from corral.cli.show import show_info
from corral.config import Settings
from corral.models import registry
from corral.models.modelfile import is_local_path, parse_modelfile
from corral.models.store import ModelName, Store, sha256_file

console = Console(stderr=True, highlight=False)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "cluster", None):
        try:  # Ray is optional (corral[ray]): imported only here
            from corral.cluster.driver import serve_cluster
        except ImportError as exc:
            raise CliError(f"--cluster needs Ray: pip install 'corral[ray]' ({exc})") from None
        if args.cluster.startswith("ray://"):
            # A Ray Client session reaches no GCS of its own: the directory (cluster/directory.py) needs one.
            raise CliError("--cluster takes the cluster's address (HEAD:6379, or auto on a machine of the cluster), "
                           "not a Ray Client ray:// address")
        console.print(f"corral listening on {settings.base_url} (Ray cluster {args.cluster})")
        serve_cluster(settings, args.cluster)
        return 0
    from corral.api.serve import serve

    console.print(f"corral listening on {settings.base_url} (models in {settings.models_dir})")
    serve(settings)
    return 0


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Through the server (its store, its mirrors); with no server running, straight into the store."""
    try:
        transfer(settings, "/api/pull", args.model, args.insecure)
    except NoServer:
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


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    transfer(settings, "/api/push", args.model, args.insecure)
    console.print("success")
    return 0


def transfer(settings: Settings, path: str, model: str, insecure: bool) -> None:
    """A registry pull or push through the server, with a progress bar per layer."""
    with Api(settings) as api, _Bars() as bars:
        for obj in api.stream(path, {"model": model, "insecure": insecure}):
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

    def update(self, obj: dict[str, Any]) -> None:
        status, digest = obj.get("status", ""), obj.get("digest")
        if digest and obj.get("total"):
            if digest not in self.tasks:
                self.tasks[digest] = self.progress.add_task(status, total=obj["total"])
            self.progress.update(self.tasks[digest], description=status, completed=obj.get("completed", 0))
        elif status and status not in self.said and status != "success":  # the verb says it last
            self.said.add(status)
            self.progress.console.print(status, markup=False)


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    """Send a Modelfile; a FROM naming a local file is uploaded as a blob first (as Ollama's CLI
    does), because the server reads no paths of its own unless told to (CORRAL_ALLOW_LOCAL_FROM)."""
    try:
        text = Path(args.file).read_text()
    except FileNotFoundError:
        raise CliError("specified Modelfile wasn't found") from None
    mf = parse_modelfile(text)
    body: dict[str, Any] = {"model": args.model, "modelfile": text}
    source = _local_file(args.file, "FROM", mf.source)
    draft = _local_file(args.file, "DRAFT", mf.draft) if mf.draft else None
    with Api(settings) as api:
        if source:
            body = {"model": args.model, "files": {_blob_name(source): _upload(api, source)},
                    "template": mf.template, "system": mf.system, "license": mf.license,
                    "parameters": mf.parameters, "messages": mf.messages or None}
        if draft:  # the server reads DRAFT from the Modelfile only when it names a store model
            body["draft_files"] = {_blob_name(draft): _upload(api, draft)}
        for obj in api.stream("/api/create", body):
            console.print(obj.get("status", ""), markup=False)
    return 0


def _local_file(modelfile: str, command: str, source: str) -> Path | None:
    """The file a FROM / DRAFT names (relative to the Modelfile), or None for a store model."""
    if not is_local_path(source):
        return None
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = Path(modelfile).resolve().parent / path
    if not path.is_file():
        raise CliError(f"{command} {source}: no such file ({path})")
    return path


def _blob_name(source: Path) -> str:
    return source.name if source.name.endswith(".gguf") else "model.gguf"


def _upload(api: Api, source: Path) -> str:
    digest = sha256_file(source)
    if api.http.head(f"/api/blobs/{digest}").status_code != 200:
        with open(source, "rb") as f:
            response = api.http.post(f"/api/blobs/{digest}", content=f)
        check_reply(response)
        if response.status_code != 201:
            raise ServerError(f"blob upload answered {response.status_code}", response.status_code)
    return digest


def list_rows(models: Sequence[dict[str, Any]], prefix: Sequence[str] = ()) -> list[list[str]]:
    """`ollama list`'s rows; an argument keeps the names that start with it."""
    return [[m["name"], m["digest"].removeprefix("sha256:")[:12], human_bytes(int(m["size"])),
             human_time(m.get("modified_at", ""))]
            for m in models if not prefix or m["name"].lower().startswith(prefix[0].lower())]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with Api(settings) as api:
            models = api.request("GET", "/api/tags")["models"]
    except NoServer:  # no server: read the store directly
        models = [{"name": m.name.short, "digest": m.digest, "size": m.size,
                   "modified_at": m.modified_at.isoformat()} for m in Store(settings.models_dir).list()]
    sys.stdout.write(table(list_rows(models, args.prefix), ["NAME", "ID", "SIZE", "MODIFIED"]))
    return 0


def _processor(size: int, vram: int) -> str:
    if vram == 0:
        return "100% CPU"
    if vram == size:
        return "100% GPU"
    if vram > size or size == 0:
        return "Unknown"
    cpu = round((size - vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def _until(expires_at: str) -> str:
    at = datetime.fromisoformat(expires_at) if expires_at else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at is not None and at < datetime.now(UTC):
        return "Stopping..."
    return human_time(expires_at)


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings) as api:
        models = api.request("GET", "/api/ps")["models"]
    rows = [[m["name"], m["digest"].removeprefix("sha256:")[:12], human_bytes(int(m["size"])),
             _processor(int(m["size"]), int(m.get("size_vram") or 0)), str(m.get("context_length", "")),
             _until(m.get("expires_at", ""))]
            for m in models if not args.prefix or m["name"].startswith(args.prefix[0])]
    sys.stdout.write(table(rows, ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]))
    return 0


SHOW_FLAGS = ("license", "modelfile", "parameters", "system", "template")


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    chosen = [flag for flag in SHOW_FLAGS if getattr(args, flag)]
    if len(chosen) > 1:
        raise CliError("only one of '--license', '--modelfile', '--parameters', '--system', or '--template' "
                       "can be specified")
    with Api(settings) as api:
        info = api.show(args.model)
    if not chosen:
        sys.stdout.write(show_info(info))
    elif chosen[0] in ("system", "template"):  # as Ollama: these two without a newline of their own
        sys.stdout.write(str(info.get(chosen[0]) or ""))
    else:
        sys.stdout.write(str(info.get(chosen[0]) or "") + "\n")
    return 0


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings) as api:
        for model in args.models:
            api.request("DELETE", "/api/delete", {"model": model})
            print(f"deleted '{model}'")
    return 0


def cmd_cp(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings) as api:
        api.request("POST", "/api/copy", {"source": args.source, "destination": args.destination})
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    with Api(settings) as api:
        try:
            api.request("POST", "/api/generate", {"model": args.model, "keep_alive": 0})
        except ServerError as exc:
            if "not found" in str(exc):
                raise CliError(f'couldn\'t find model "{args.model}" to stop') from None
            raise
    return 0
