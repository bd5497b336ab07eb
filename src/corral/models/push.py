"""Push a model to a registry, as Ollama's client does: the blobs it lacks, then the manifest."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import httpx

from corral.models.registry_session import Progress, RegistryError, Session, endpoint, status_error, unreachable
from corral.models.store import CHUNK, MEDIA_MANIFEST, ModelName, Store

READ_TIMEOUT_S = 30.0  # between two writes of a blob


def push(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None,
         mirrors: Mapping[str, str] | None = None) -> None:
    """Upload the blobs the registry lacks, then the manifest byte for byte (to the mirror, if the
    host has one). A repository with capitals that the registry refuses is pushed in lowercase."""
    report = progress or (lambda *a: None)
    end = endpoint(name, insecure, mirrors)
    session = Session(end, name.repository)
    try:
        _push(session, store, name, report)
    except httpx.TransportError as exc:
        raise unreachable(end, exc) from exc
    finally:
        session.close()


def _push(session: Session, store: Store, name: ModelName, report: Progress) -> None:
    raw = store.manifest_bytes(name)
    manifest = store.manifest(name)
    base = session.end.base
    for layer in [*manifest.layers, manifest.config]:
        head = session.send("HEAD", session.url("blobs", layer.digest))
        if head.status_code == 200:
            report(f"using existing {layer.digest[7:19]}", layer.size, layer.size, layer.digest)
            continue
        start = session.send("POST", f"{base}/v2/{session.repository}/blobs/uploads/")
        if start.status_code == 404 and session.repository != session.repository.lower():
            session.repository = session.repository.lower()  # OCI repository names are lowercase
            start = session.send("POST", f"{base}/v2/{session.repository}/blobs/uploads/")
        if start.status_code != 202 or "location" not in start.headers:
            raise status_error(session.end, start.status_code, "an upload", start.text)
        # The upload URL carries the registry's signed state: append to it, never re-encode it.
        location = start.headers["location"]
        if location.startswith("/"):
            origin = httpx.URL(base)
            location = f"{origin.scheme}://{origin.netloc.decode('ascii')}{location}"
        location += ("&" if "?" in location else "?") + f"digest={layer.digest}"
        path = store.blob_path(layer.digest)
        r = session.send("PUT", location, content=partial(_read_chunks, path), read_timeout=READ_TIMEOUT_S,
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(path.stat().st_size)})
        if r.status_code not in (201, 204):
            raise RegistryError(f"upload of {layer.digest} failed ({r.status_code}: {r.text[:200]})")
        report(f"pushing {layer.digest[7:19]}", layer.size, layer.size, layer.digest)
    report("pushing manifest", 0, 0, "")
    r = session.send("PUT", session.url("manifests", name.tag), content=lambda: raw,
                     headers={"Content-Type": MEDIA_MANIFEST})
    if r.status_code not in (200, 201):
        raise RegistryError(f"registry refused the manifest ({r.status_code}: {r.text[:200]})")
    report("success", 0, 0, "")


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block
