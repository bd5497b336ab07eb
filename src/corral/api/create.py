"""/api/create and /api/blobs: build a model in the store from a Modelfile or Ollama's JSON form.

All file work (hashing, copying, header checks, manifest writes) runs in worker threads: a 20 GB
model must not stop every stream on the event loop while it is copied. A server-side path in
`from` / FROM is refused (403) unless CORRAL_ALLOW_LOCAL_FROM allows its directory; clients
upload files as blobs instead, as Ollama's (and `corral create`) do.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.schemas import CreateRequest
from corral.errors import ClientError, Forbidden
from corral.models.gguf_info import GGUFFormatError, read_gguf, vocabulary
from corral.models.modelfile import (
    Modelfile,
    ModelfileError,
    add_parameter,
    is_local_path,
    parse_modelfile,
    text_layers,
)
from corral.models.store import MEDIA_DRAFT, MEDIA_MODEL, Layer, ModelName, ModelNotFound, Store, check_digest

router = APIRouter(prefix="/api")
PIECE = 1 << 20  # upload bytes handed to the writer thread at a time
_GGUF_VERSIONS = (2, 3)


def _store(request: Request) -> Store:
    return request.app.state.corral.store


@router.head("/blobs/{digest}")
async def blob_exists(digest: str, request: Request) -> Response:
    return Response(status_code=200 if _store(request).has_blob(check_digest(digest)) else 404)


@router.post("/blobs/{digest}", status_code=201)
async def blob_upload(digest: str, request: Request) -> Response:
    """Stream the body to disk, hashing as it comes; a blob whose sha256 differs is never kept.
    Any content is kept, as Ollama does: /api/create is where a blob must be a GGUF."""
    store = _store(request)
    writer = await asyncio.to_thread(store.blob_writer, check_digest(digest))
    try:
        piece = bytearray()
        async for chunk in request.stream():
            piece += chunk
            if len(piece) >= PIECE:
                full, piece = piece, bytearray()
                await asyncio.to_thread(writer.write, full)
        await asyncio.to_thread(writer.write, piece)
        await asyncio.to_thread(writer.commit)
    finally:
        writer.close()  # removes the temporary unless committed: a cut-off upload leaves nothing
    return Response(status_code=201)


def _modelfile(body: CreateRequest) -> Modelfile:
    if body.modelfile:
        return parse_modelfile(body.modelfile)
    mf = Modelfile(source=body.from_ or "", template=body.template, system=body.system,
                   license="\n".join(body.license) if isinstance(body.license, list) else body.license,
                   # whole messages, as Ollama's layer keeps them (thinking, tool calls, tool names)
                   messages=[m.model_dump(exclude_none=True) for m in body.messages or []])
    for key, value in (body.parameters or {}).items():
        for item in value if isinstance(value, list) else [value]:
            add_parameter(mf.parameters, key, item)
    return mf


def _refuse(source: str, why: str, command: str = "FROM") -> Forbidden:
    return Forbidden(f"{command} {source}: {why}; upload the file as a blob (POST /api/blobs/<digest>, "
                     "then `files`, as `corral create -f` does), or allow its directory on the "
                     "server with CORRAL_ALLOW_LOCAL_FROM")


def _within(path: Path, allowed: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in allowed)


def open_local(source: str, allowed: tuple[Path, ...] | None, command: str = "FROM") -> BinaryIO:
    """Open a server-side GGUF named by FROM, or refuse: off unless allowed, symlinks resolved and
    the opened file itself checked against the allowed directories (no swap between check and
    open), a regular file, and a GGUF header, all before a byte is copied."""
    if allowed is None:
        raise _refuse(source, "server-side paths are not allowed on this server", command)
    path = Path(source).expanduser().resolve()
    # The same answer whether or not a path outside exists, so refusals reveal nothing.
    if not _within(path, allowed):
        raise _refuse(source, "not inside a directory this server allows", command)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except OSError as exc:
        raise ModelfileError(f"{command} {source}: {exc.strerror.lower() if exc.strerror else exc}") from None
    f = os.fdopen(fd, "rb")
    try:
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            real = path  # no /proc: the resolved path is what was checked
        if not _within(real, allowed):
            raise _refuse(source, "not inside a directory this server allows", command)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelfileError(f"{command} {source}: not a regular file")
        head = f.read(8)
        if len(head) < 8 or head[:4] != b"GGUF" or int.from_bytes(head[4:], "little") not in _GGUF_VERSIONS:
            raise ModelfileError(f"{command} {source}: not a GGUF file")
        f.seek(0)
        return f
    except BaseException:
        f.close()
        raise


def _weights(store: Store, body: CreateRequest, mf: Modelfile, allowed: tuple[Path, ...] | None,
             created: list[str]) -> tuple[Layer, dict[str, str]]:
    """The weights layer, and the base model's text layers (a FROM model's settings carry over).
    Blobs this call adds to the store go into `created`, to be removed if the create fails."""
    if body.files:
        return _uploaded(store, body.files, "files", MEDIA_MODEL), {}
    if not mf.source:
        raise ModelfileError("nothing to create from: give `from`, `files` or a Modelfile with FROM")
    if is_local_path(mf.source):
        return _local(store, mf.source, allowed, created, "FROM", MEDIA_MODEL), {}
    base = ModelName.parse(mf.source)
    manifest = store.manifest(base)
    weights = manifest.layer(MEDIA_MODEL)
    if weights is None:
        raise ModelNotFound(f"model '{base.short}' has no weights")
    inherited = {layer.media_type: store.blob_path(layer.digest).read_text()
                 for layer in manifest.layers if layer.media_type not in (MEDIA_MODEL, MEDIA_DRAFT)}
    return weights, inherited


def _uploaded(store: Store, files: dict[str, str], field: str, media_type: str) -> Layer:
    """The one .gguf of `files` / `draft_files`: an uploaded blob, its digest validated."""
    ggufs = [d for n, d in files.items() if n.endswith(".gguf")]
    if len(ggufs) != 1:
        raise ModelfileError(f"{field} must name exactly one .gguf file")
    digest = check_digest(ggufs[0])
    if not store.has_blob(digest):
        raise ModelfileError(f"blob {digest} has not been uploaded (POST /api/blobs/{digest})")
    return Layer(media_type, digest, store.blob_path(digest).stat().st_size)


def _local(store: Store, source: str, allowed: tuple[Path, ...] | None, created: list[str], command: str,
           media_type: str) -> Layer:
    with open_local(source, allowed, command) as f:
        layer, new = store.add_blob_from(f)
    if new:
        created.append(layer.digest)
    return Layer(media_type, layer.digest, layer.size)


def _draft(store: Store, body: CreateRequest, mf: Modelfile, allowed: tuple[Path, ...] | None,
           created: list[str]) -> Layer | None:
    """The draft model's layer: `draft_files`, DRAFT (a file, or a store model's weights), or the
    FROM model's own draft, carried over as its other layers are."""
    if body.draft_files:
        return _uploaded(store, body.draft_files, "draft_files", MEDIA_DRAFT)
    if mf.draft and is_local_path(mf.draft):
        return _local(store, mf.draft, allowed, created, "DRAFT", MEDIA_DRAFT)
    if mf.draft:
        weights = store.manifest(ModelName.parse(mf.draft)).layer(MEDIA_MODEL)
        if weights is None:
            raise ModelNotFound(f"model '{mf.draft}' has no weights")
        return Layer(MEDIA_DRAFT, weights.digest, weights.size)
    if mf.source and not body.files and not is_local_path(mf.source):
        return store.manifest(ModelName.parse(mf.source)).layer(MEDIA_DRAFT)
    return None


def _check_draft(store: Store, weights: Layer, draft: Layer) -> dict:
    """A draft must be a GGUF with the model's vocabulary (its token ids are what the model
    verifies); the manifest config's `draft` entry, as Ollama writes it."""
    try:
        info = read_gguf(store.blob_path(draft.digest))
    except GGUFFormatError as exc:
        raise ModelfileError(f"the draft model is not a valid GGUF file: {exc}") from None
    model_kind, model_tokens = vocabulary(store.blob_path(weights.digest))
    draft_kind, draft_tokens = vocabulary(store.blob_path(draft.digest))
    if (model_kind, model_tokens) != (draft_kind, draft_tokens):
        raise ModelfileError(f"the draft model's vocabulary does not match the model's ({draft_kind}, "
                             f"{len(draft_tokens)} tokens; the model: {model_kind}, {len(model_tokens)} tokens)")
    return {"model_format": "gguf", "architecture": info.architecture}


def _build(store: Store, name: ModelName, body: CreateRequest, mf: Modelfile, text: dict[str, str],
           allowed: tuple[Path, ...] | None) -> Layer:
    """Everything that touches files, in one worker thread; a failure leaves no blob it wrote."""
    created: list[str] = []
    try:
        weights, layers = _weights(store, body, mf, allowed, created)
        read_gguf(store.blob_path(weights.digest))  # a blob that is not a GGUF fails here, not at load
        draft = _draft(store, body, mf, allowed, created)
        config: dict = {"model_format": "gguf"}
        if draft is not None:
            config["draft"] = _check_draft(store, weights, draft)
        layers.update(text)
        extra = []
        for media, content in layers.items():
            layer, new = store.add_blob_from(io.BytesIO(content.encode()))
            if new:
                created.append(layer.digest)
            extra.append(Layer(media, layer.digest, layer.size))
        store.write_manifest(name, [weights, *([draft] if draft else []), *extra], config)
        return weights
    except BaseException:
        store.remove_unused_blobs(created)
        raise


@router.post("/create")
async def create(body: CreateRequest, request: Request) -> Response:
    ctx = request.app.state.corral
    name = ModelName.parse(body.target)
    mf = _modelfile(body)
    if body.draft_quantize:
        if not body.draft_files and not mf.draft:
            raise ClientError("--draft-quantize requires a DRAFT model")  # Ollama's words
        raise ClientError("draft_quantize is not supported: corral does not quantize; upload a quantized draft")
    text = text_layers(mf)  # a bad template is refused before any file is touched
    try:
        weights = await asyncio.to_thread(_build, ctx.store, name, body, mf, text, ctx.settings.local_from_dirs)
    except GGUFFormatError as exc:
        raise ModelfileError(f"the model's weights are not a valid GGUF file: {exc}") from None
    statuses = ["parsing modelfile", "using existing layer " + weights.digest, "writing manifest", "success"]
    if body.stream:
        return StreamingResponse((json.dumps({"status": s}) + "\n" for s in statuses),
                                 media_type="application/x-ndjson")
    return JSONResponse({"status": "success"})
