"""Pull from and push to registries that speak the OCI distribution protocol, as Ollama's does.

Names carry the registry: `host[:port]/namespace/model:tag`. https unless `insecure` is asked for.
Blobs are verified by sha256 before they are kept; an interrupted download resumes from its
partial file (Store.partial_blob) with an HTTP Range request. A registry that cannot be reached
is RegistryUnreachable (502, the host named) within the connect timeout, never a hang.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import httpx

from corral.models.store import CHUNK, MEDIA_MANIFEST, BlobMismatch, ModelName, Store, check_digest

Progress = Callable[[str, int, int, str], None]  # status, completed, total, digest
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # between two reads: a slow registry is fine, a silent one is not


class RegistryError(RuntimeError):
    pass


class RegistryUnreachable(RegistryError):
    """The registry's host did not answer: refused, unresolvable, timed out, or cut off."""


def _base(name: ModelName, insecure: bool) -> str:
    return f"{'http' if insecure else 'https'}://{name.host}/v2/{name.namespace}/{name.model}"


def _client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S), follow_redirects=True)


def _unreachable(name: ModelName, exc: httpx.TransportError) -> RegistryUnreachable:
    reason = str(exc) or type(exc).__name__
    return RegistryUnreachable(f"cannot reach registry {name.host}: {reason}")


def pull(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None) -> None:
    report = progress or (lambda *a: None)
    try:
        _pull(store, name, insecure, report)
    except httpx.TransportError as exc:
        raise _unreachable(name, exc) from exc


def _pull(store: Store, name: ModelName, insecure: bool, report: Progress) -> None:
    base = _base(name, insecure)
    with _client() as client:
        report("pulling manifest", 0, 0, "")
        r = client.get(f"{base}/manifests/{name.tag}", headers={"Accept": MEDIA_MANIFEST})
        if r.status_code == 404:
            raise RegistryError(f"model '{name.short}' not found in the registry")
        if r.status_code != 200:
            raise RegistryError(f"registry answered {r.status_code} for the manifest of '{name.short}'")
        raw = r.content
        try:
            body = json.loads(raw)
            blobs = [(check_digest(b["digest"]), int(b.get("size", 0)))  # before any digest names a file
                     for b in [body["config"], *body.get("layers", [])]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"the registry's manifest of '{name.short}' is not valid: {exc}") from None
        for digest, size in blobs:
            if not store.has_blob(digest):
                _download(client, store, f"{base}/blobs/{digest}", digest, size, report)
        report("writing manifest", 0, 0, "")
        store.write_manifest_bytes(name, raw)
        report("success", 0, 0, "")


def _download(client: httpx.Client, store: Store, url: str, digest: str, size: int, report: Progress) -> None:
    with store.partial_blob(digest) as part:
        if store.has_blob(digest):
            return  # another pull of the same blob finished it while this one waited for the lock
        have = part.size
        with client.stream("GET", url, headers={"Range": f"bytes={have}-"} if have else {}) as r:
            if r.status_code == 200 and have:
                part.restart()  # the registry ignored the range: start over
                have = 0
            elif r.status_code not in (200, 206):
                raise RegistryError(f"registry answered {r.status_code} for blob {digest}")
            done = have
            for chunk in r.iter_bytes(CHUNK):
                part.write(chunk)
                done += len(chunk)
                report(f"pulling {digest[7:19]}", done, size, digest)
        try:
            part.finish()
        except BlobMismatch as exc:
            raise RegistryError(str(exc)) from None
        report("verifying sha256 digest", size, size, digest)


def push(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None) -> None:
    report = progress or (lambda *a: None)
    try:
        _push(store, name, insecure, report)
    except httpx.TransportError as exc:
        raise _unreachable(name, exc) from exc


def _push(store: Store, name: ModelName, insecure: bool, report: Progress) -> None:
    base = _base(name, insecure)
    raw = store.manifest_bytes(name)
    manifest = store.manifest(name)
    with _client() as client:
        for layer in [manifest.config, *manifest.layers]:
            if client.head(f"{base}/blobs/{layer.digest}").status_code == 200:
                report(f"using existing {layer.digest[7:19]}", layer.size, layer.size, layer.digest)
                continue
            start = client.post(f"{base}/blobs/uploads/")
            if start.status_code != 202 or "location" not in start.headers:
                raise RegistryError(f"registry refused an upload ({start.status_code})")
            # The upload URL carries the registry's signed state: append to it, never re-encode it.
            location = start.headers["location"]
            if location.startswith("/"):
                location = f"{base.split('/v2/')[0]}{location}"
            location += ("&" if "?" in location else "?") + f"digest={layer.digest}"
            path = store.blob_path(layer.digest)
            r = client.put(location, content=_read_chunks(path),
                           headers={"Content-Type": "application/octet-stream",
                                    "Content-Length": str(path.stat().st_size)})
            if r.status_code not in (201, 204):
                raise RegistryError(f"upload of {layer.digest} failed ({r.status_code}: {r.text[:200]})")
            report(f"pushing {layer.digest[7:19]}", layer.size, layer.size, layer.digest)
        r = client.put(f"{base}/manifests/{name.tag}", content=raw, headers={"Content-Type": MEDIA_MANIFEST})
        if r.status_code not in (200, 201):
            raise RegistryError(f"registry refused the manifest ({r.status_code}: {r.text[:200]})")
    report("success", 0, 0, "")


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block
