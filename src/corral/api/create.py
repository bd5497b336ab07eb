"""/api/create and /api/blobs: build a model in the store from a Modelfile or Ollama's JSON form."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.schemas import CreateRequest
from corral.models.gguf_info import read_gguf
from corral.models.modelfile import Modelfile, ModelfileError, add_parameter, parse_modelfile, text_layers
from corral.models.store import MEDIA_MODEL, Layer, ModelName, ModelNotFound, Store, check_digest

router = APIRouter(prefix="/api")


def _store(request: Request) -> Store:
    return request.app.state.corral.store


@router.head("/blobs/{digest}")
async def blob_exists(digest: str, request: Request) -> Response:
    return Response(status_code=200 if _store(request).has_blob(check_digest(digest)) else 404)


@router.post("/blobs/{digest}", status_code=201)
async def blob_upload(digest: str, request: Request) -> Response:
    """Stream the body to disk, hashing as it comes; a blob whose sha256 differs is never kept."""
    store = _store(request)
    expected = check_digest(digest)
    target = store.blob_path(expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".partial") as tmp:
        try:
            async for chunk in request.stream():
                h.update(chunk)
                tmp.write(chunk)
        except BaseException:
            os.unlink(tmp.name)
            raise
    if "sha256:" + h.hexdigest() != expected:
        os.unlink(tmp.name)
        raise ValueError(f"digest mismatch: body is sha256:{h.hexdigest()}, not {expected}")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    return Response(status_code=201)


def _modelfile(body: CreateRequest) -> Modelfile:
    if body.modelfile:
        return parse_modelfile(body.modelfile)
    mf = Modelfile(source=body.from_ or "", template=body.template, system=body.system,
                   license="\n".join(body.license) if isinstance(body.license, list) else body.license)
    for key, value in (body.parameters or {}).items():
        for item in value if isinstance(value, list) else [value]:
            add_parameter(mf.parameters, key, item)
    return mf


def _weights(store: Store, body: CreateRequest, mf: Modelfile) -> tuple[Layer, dict[str, str]]:
    """The weights layer, and the base model's text layers (a FROM model's settings carry over)."""
    if body.files:
        ggufs = [d for n, d in body.files.items() if n.endswith(".gguf")]
        if len(ggufs) != 1:
            raise ValueError("files must name exactly one .gguf file")
        digest = check_digest(ggufs[0])
        if not store.has_blob(digest):
            raise ValueError(f"blob {digest} has not been uploaded (POST /api/blobs/{digest})")
        return Layer(MEDIA_MODEL, digest, store.blob_path(digest).stat().st_size), {}
    if not mf.source:
        raise ValueError("nothing to create from: give `from`, `files` or a Modelfile with FROM")
    path = Path(mf.source).expanduser()
    if mf.source.endswith(".gguf") or mf.source.startswith(("/", "./", "~")):
        if not path.is_file():
            raise ValueError(f"FROM {mf.source}: no such file")
        layer = store.add_blob_file(path)
        return Layer(MEDIA_MODEL, layer.digest, layer.size), {}
    base = ModelName.parse(mf.source)
    manifest = store.manifest(base)
    weights = manifest.layer(MEDIA_MODEL)
    if weights is None:
        raise ModelNotFound(f"model '{base.short}' has no weights")
    inherited = {l.media_type: store.blob_path(l.digest).read_text() for l in manifest.layers if l.media_type != MEDIA_MODEL}
    return weights, inherited


@router.post("/create")
async def create(body: CreateRequest, request: Request) -> Response:
    store = _store(request)
    name = ModelName.parse(body.target)
    try:
        mf = _modelfile(body)
        weights, layers = _weights(store, body, mf)
        read_gguf(store.blob_path(weights.digest))  # a file that is not GGUF fails here, not at load
        layers.update(text_layers(mf))
    except ModelfileError as exc:
        raise ValueError(str(exc)) from None
    extra = [Layer(media, store.add_blob_bytes(text.encode()), len(text.encode())) for media, text in layers.items()]
    store.write_manifest(name, [weights, *extra])
    statuses = ["parsing modelfile", "using existing layer " + weights.digest, "writing manifest", "success"]
    if body.stream:
        return StreamingResponse((json.dumps({"status": s}) + "\n" for s in statuses),
                                 media_type="application/x-ndjson")
    return JSONResponse({"status": "success"})
