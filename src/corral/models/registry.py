"""Pull from and push to registries that speak the OCI distribution protocol, as Ollama's does.

Names carry the registry: `host[:port]/namespace/model:tag`. https unless `insecure` is asked for.
Blobs are verified by sha256 before they are kept; an interrupted download resumes from its
`.partial` file with an HTTP Range request.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import httpx

from corral.models.store import MEDIA_MANIFEST, ModelName, Store, check_digest

Progress = Callable[[str, int, int, str], None]  # status, completed, total, digest
CHUNK = 1 << 20


class RegistryError(RuntimeError):
    pass


def _base(name: ModelName, insecure: bool) -> str:
    return f"{'http' if insecure else 'https'}://{name.host}/v2/{name.namespace}/{name.model}"


def _client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(30.0, read=300.0), follow_redirects=True)


def pull(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None) -> None:
    report = progress or (lambda *a: None)
    base = _base(name, insecure)
    with _client() as client:
        report("pulling manifest", 0, 0, "")
        r = client.get(f"{base}/manifests/{name.tag}", headers={"Accept": MEDIA_MANIFEST})
        if r.status_code == 404:
            raise RegistryError(f"model '{name.short}' not found in the registry")
        if r.status_code != 200:
            raise RegistryError(f"registry answered {r.status_code} for the manifest of '{name.short}'")
        raw = r.content
        body = json.loads(raw)
        blobs = [body["config"], *body.get("layers", [])]
        for blob in blobs:
            digest = check_digest(blob["digest"])  # before it names any file
            if not store.has_blob(digest):
                _download(client, store, f"{base}/blobs/{digest}", digest, int(blob.get("size", 0)), report)
        report("writing manifest", 0, 0, "")
        store.write_manifest_bytes(name, raw)
        report("success", 0, 0, "")


def _download(client: httpx.Client, store: Store, url: str, digest: str, size: int, report: Progress) -> None:
    target = store.blob_path(digest)
    partial = target.with_name(target.name + "-partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 200 and have:
            have = 0  # the registry ignored the range: start over
        elif r.status_code not in (200, 206):
            raise RegistryError(f"registry answered {r.status_code} for blob {digest}")
        with open(partial, "ab" if have else "wb") as out:
            done = have
            for chunk in r.iter_bytes(CHUNK):
                out.write(chunk)
                done += len(chunk)
                report(f"pulling {digest[7:19]}", done, size, digest)
    h = hashlib.sha256()
    with open(partial, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    if "sha256:" + h.hexdigest() != digest:
        partial.unlink()
        raise RegistryError(f"blob {digest} failed verification (got sha256:{h.hexdigest()}); not kept")
    report("verifying sha256 digest", size, size, digest)
    os.replace(partial, target)


def push(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None) -> None:
    report = progress or (lambda *a: None)
    base = _base(name, insecure)
    raw = store.manifest_path(name).read_bytes()
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


def _read_chunks(path: Path):
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield block
