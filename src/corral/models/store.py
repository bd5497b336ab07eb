"""The model store, in Ollama's layout: manifests/<host>/<namespace>/<model>/<tag> + blobs/sha256-<hex>.

This is the only module that builds paths under the store. Every name and digest is validated
here before it is joined to a path (Ollama's CVE-2024-37032 came from not doing so).

Names follow Ollama's types/model/name.go: `[host/][namespace/]model[:tag]`, defaults
registry.ollama.ai, library and latest; each part from its own character set. A name keeps the case
it was typed in (on disk too), and names match case-insensitively: a lookup, or a write of a name
that differs from a stored one only in case, uses the stored one's folders (Ollama's
getExistingName), so one model never has two spellings in the store.

Files are written beside their final place under a temporary name that starts with a dot, which
no name part, tag or digest can start with (so `foo:latest.partial` is a model like any other),
and renamed into place once complete; every failure path removes the temporary. A writer holds an
flock on its temporary, so opening a Store (server start) can sweep those nobody holds: the
leftovers of a crash, a kill or a full disk. Files get at most the store directory's permissions
without write or execute (0644 in a 0755 store, 0600 in a 0700 one), and the umask narrows that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from corral.errors import NotFound
from corral.models.blobs import BlobMismatch, BlobWriter, PartialBlob
from corral.models.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, InvalidName, ModelName, check_digest
from corral.models.safe_files import (
    CHUNK,
    STALE_AFTER_S,
    TEMP_PREFIX,
    StorageFull,
    Temporary,
    disk_space,
    open_locked,
    remove_if_stale,
    sha256_file,
)

__all__ = ["CHUNK", "DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "STALE_AFTER_S", "TEMP_PREFIX",
           "BlobMismatch", "BlobWriter", "InvalidName", "ModelName", "PartialBlob", "StorageFull",
           "check_digest", "sha256_file"]


MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_DRAFT = "application/vnd.ollama.image.draft"  # a draft model's GGUF (speculative decoding)

PARTIAL_SUFFIX = "-partial"  # a resumable download, blobs/sha256-<hex>-partial, as Ollama names it
# A temporary exists for a moment before its writer locks it; a sweep leaves younger files alone.

_BLOB_NAME = re.compile(r"^sha256-[0-9a-f]{64}$")
_ANY_DIGEST = re.compile(rb"sha256[:-]([0-9a-f]{64})")


class ModelNotFound(NotFound):
    """No such model in the store (Ollama's text: "model 'NAME' not found")."""




@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    name: ModelName
    config: Layer
    layers: tuple[Layer, ...]
    modified_at: datetime
    digest: str  # sha256 of the manifest file itself, as Ollama reports it

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)


def kv_cache_dir(root: Path) -> Path:
    """The default CORRAL_CACHE_DIR: unloaded models' prompt-cache states (runner/disk_cache.py),
    beside blobs/ and manifests/, where no Ollama path goes."""
    return Path(root) / "kvcache"


class Store:
    def __init__(self, root: Path, sweep: bool = True) -> None:
        self.root = Path(root)
        # Manifest writes and garbage collection, one at a time within this process, so a delete
        # never collects a blob that a manifest being written names.
        self._lock = threading.RLock()
        if sweep:
            self.sweep()

    # -- paths (the only place they are built) --------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / check_digest(digest).replace(":", "-")

    def partial_path(self, digest: str) -> Path:
        return self.root / "blobs" / (check_digest(digest).replace(":", "-") + PARTIAL_SUFFIX)

    def manifest_path(self, name: ModelName) -> Path:
        """Where a name's manifest is (or goes): the stored spelling of each part that has one."""
        return self._manifest_path(self.stored_name(name))

    def _manifest_path(self, name: ModelName) -> Path:
        return self.root / "manifests" / name.host / name.namespace / name.model / name.tag

    def stored_name(self, name: ModelName) -> ModelName:
        """The name as the store spells it: at each level (host, namespace, model, tag), the entry
        that equals the typed part ignoring case, if there is one; the typed part otherwise."""
        if not isinstance(name, ModelName):
            raise TypeError("a ModelName is required")
        folder = self.root / "manifests"
        parts = []
        for part in (name.host, name.namespace, name.model, name.tag):
            if not (folder / part).exists():
                try:
                    part = next((e for e in sorted(os.listdir(folder)) if e.isascii() and e.lower() == part.lower()),
                                part)
                except OSError:
                    pass  # no such folder (yet): the rest is as typed
            parts.append(part)
            folder = folder / part
        return ModelName(*parts)

    # -- modes, space, directories --------------------------------------------------------------
    def _space(self, what: str) -> AbstractContextManager[None]:
        return disk_space(what, self.root)

    def _dir_mode(self) -> int:
        return stat.S_IMODE(self.root.stat().st_mode)

    def _file_mode(self) -> int:
        return self._dir_mode() & 0o644

    def _mkdirs(self, path: Path) -> None:
        """Create directories under the store with the store directory's own permissions."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        missing = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        mode = self._dir_mode()
        for directory in reversed(missing):
            directory.mkdir(mode=mode, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_writer(self, digest: str | None = None) -> BlobWriter:
        return BlobWriter(self, digest)

    def add_blob_from(self, source: BinaryIO, digest: str | None = None) -> tuple[Layer, bool]:
        """Copy an open file into blobs/, hashing as it goes (one read); (layer, whether it is new)."""
        with self.blob_writer(digest) as writer:
            while block := source.read(CHUNK):
                writer.write(block)
            return writer.commit()

    def add_blob_file(self, source: Path, digest: str | None = None) -> Layer:
        """Copy a file into blobs/, verifying its sha256 when a digest is given; never keeps a bad blob."""
        with open(source, "rb") as f:
            return self.add_blob_from(f, digest)[0]

    def add_blob_bytes(self, data: bytes) -> str:
        with self.blob_writer() as writer:
            writer.write(data)
            return writer.commit()[0].digest

    @contextmanager
    def partial_blob(self, digest: str) -> Iterator[PartialBlob]:
        """The resumable download of one blob, locked: a second pull of the same blob waits here.
        A full disk or a failed verification removes it; other failures keep it to resume from."""
        digest = check_digest(digest)
        path = self.partial_path(digest)
        with self._space(f"downloading blob {digest}"):
            self._mkdirs(path.parent)
            fd = open_locked(path, self._file_mode())
        try:
            yield PartialBlob(self, digest, fd)
        except (StorageFull, BlobMismatch):
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def remove_unused_blobs(self, digests: list[str]) -> None:
        """Remove blobs that no manifest names (what a failed create wrote)."""
        with self._lock:
            self._collect(digests)

    # -- manifests --------------------------------------------------------------------------
    def write_manifest(self, name: ModelName, layers: list[Layer], config: dict | None = None) -> Manifest:
        config_bytes = json.dumps(config or {"model_format": "gguf"}).encode()
        config_digest = self.add_blob_bytes(config_bytes)
        body = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": Layer(MEDIA_CONFIG, config_digest, len(config_bytes)).to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        return self._put_manifest(name, json.dumps(body, indent=2).encode())

    def write_manifest_bytes(self, name: ModelName, raw: bytes) -> Manifest:
        """Keep a pulled manifest byte for byte (its digest is its identity)."""
        return self._put_manifest(name, raw)

    def _put_manifest(self, name: ModelName, raw: bytes) -> Manifest:
        body = json.loads(raw)
        digests = [check_digest(obj["digest"]) for obj in [body["config"], *body.get("layers", [])]]
        path = self.manifest_path(name)
        with self._lock, self._space(f"writing the manifest of {name.short}"):
            missing = [d for d in digests if not self.has_blob(d)]
            if missing:  # collected by a delete since it was written: a manifest must never dangle
                raise RuntimeError(f"blob {missing[0]} of '{name.short}' is not in the store; try again")
            self._mkdirs(path.parent)
            tmp = Temporary(path.parent, self._file_mode())
            try:
                tmp.file.write(raw)
                tmp.commit(path)
            except BaseException:
                tmp.discard()
                raise
        return self.manifest(name)

    def manifest(self, name: ModelName) -> Manifest:
        name = self.stored_name(name)
        path = self._manifest_path(name)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFound(f"model '{name.short}' not found") from None
        body = json.loads(raw)

        def layer(obj: dict) -> Layer:
            return Layer(obj["mediaType"], check_digest(obj["digest"]), int(obj["size"]))

        return Manifest(
            name=name,
            config=layer(body["config"]),
            layers=tuple(layer(obj) for obj in body.get("layers", [])),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        )

    def manifest_bytes(self, name: ModelName) -> bytes:
        try:
            return self.manifest_path(name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFound(f"model '{name.short}' not found") from None

    def model_file(self, name: ModelName) -> Path:
        """Path of the GGUF weights behind a model name."""
        layer = self.manifest(name).layer(MEDIA_MODEL)
        if layer is None:
            raise ModelNotFound(f"model '{name.short}' has no weights layer")
        path = self.blob_path(layer.digest)
        if not path.is_file():
            raise ModelNotFound(f"model '{name.short}' is missing its weights blob")
        return path

    def draft_file(self, name: ModelName) -> Path | None:
        """Path of the draft model's GGUF, if the model carries one."""
        layer = self.manifest(name).layer(MEDIA_DRAFT)
        if layer is None:
            return None
        path = self.blob_path(layer.digest)
        if not path.is_file():
            raise ModelNotFound(f"model '{name.short}' is missing its draft blob")
        return path

    def text_layer(self, name: ModelName, media_type: str) -> str | None:
        layer = self.manifest(name).layer(media_type)
        if layer is None:
            return None
        return self.blob_path(layer.digest).read_text()

    def list(self) -> Iterator[Manifest]:
        base = self.root / "manifests"
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/*/*/*")):
            if path.is_file() and not path.name.startswith(TEMP_PREFIX):
                host, namespace, model, tag = path.relative_to(base).parts
                try:
                    yield self.manifest(ModelName.parse(f"{host}/{namespace}/{model}:{tag}"))
                except (InvalidName, ValueError, KeyError):
                    continue  # a foreign or broken file in the store is not ours to list

    def copy(self, source: ModelName, destination: ModelName) -> Manifest:
        return self._put_manifest(destination, self.manifest_bytes(source))

    def delete(self, name: ModelName) -> None:
        with self._lock:
            manifest = self.manifest(name)
            path = self.manifest_path(name)
            path.unlink()
            self._prune(path.parent)
            self._collect([manifest.config.digest, *(layer.digest for layer in manifest.layers)])

    def _prune(self, directory: Path) -> None:
        """Remove the manifest folders a delete left empty, up to manifests/ itself."""
        base = self.root / "manifests"
        while directory != base and base in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone): the folders above are not empty either
            directory = directory.parent

    def _collect(self, digests: Iterable[str]) -> None:  # not list[str]: in this class `list` is Store.list
        used = self._used_digests()
        if used is None:
            return
        for digest in digests:
            if check_digest(digest) not in used:
                self.blob_path(digest).unlink(missing_ok=True)

    def _used_digests(self) -> set[str] | None:
        """Every digest any file under manifests/ names, whatever its name, temporaries (a manifest
        being written) included; None when one cannot be read, and then nothing is collected."""
        used: set[str] = set()
        for folder, _, files in os.walk(self.root / "manifests"):
            for file in files:
                try:
                    raw = Path(folder, file).read_bytes()
                except FileNotFoundError:
                    continue  # a temporary renamed into place meanwhile; read there
                except OSError:
                    return None
                used.update("sha256:" + hex_.decode() for hex_ in _ANY_DIGEST.findall(raw))
        return used

    # -- temporaries --------------------------------------------------------------------------
    @contextmanager
    def temp_dir(self) -> Iterator[Path]:
        """A scratch folder inside the store (same filesystem as blobs/), locked; removed on exit."""
        with self._space("creating a scratch folder"):
            self._mkdirs(self.root)
            path = self.root / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            path.mkdir(mode=0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def sweep(self) -> int:
        """Remove temporaries nobody holds (left by a crash, a kill or a full disk); how many."""
        if not self.root.is_dir():
            return 0
        candidates = [self.root / e for e in os.listdir(self.root)
                      if e.startswith(TEMP_PREFIX) or e.startswith("corral-pull-")]  # older versions' name
        blobs = self.root / "blobs"
        if blobs.is_dir():
            candidates += [blobs / e for e in os.listdir(blobs) if not _BLOB_NAME.match(e)]
        for folder, _, files in os.walk(self.root / "manifests"):
            candidates += [Path(folder, f) for f in files if f.startswith(TEMP_PREFIX)]
        return sum(remove_if_stale(path) for path in candidates)
