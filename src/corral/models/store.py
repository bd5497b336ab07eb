"""The model store, in Ollama's layout: manifests/<host>/<namespace>/<model>/<tag> + blobs/sha256-<hex>.

This is the only module that builds paths under the store. Every name and digest is validated
here before it is joined to a path (Ollama's CVE-2024-37032 came from not doing so).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}(:[0-9]{1,5})?$")


class InvalidName(ValueError):
    """A model name or digest that must not reach the filesystem."""


class ModelNotFound(LookupError):
    pass


def check_digest(digest: str) -> str:
    """Canonical 'sha256:<hex>' form; raises InvalidName for anything else."""
    match = _DIGEST.match(digest or "")
    if not match:
        raise InvalidName(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return f"sha256:{match.group(1)}"


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> "ModelName":
        text = (name or "").strip()
        if not text:
            raise InvalidName("model name is required")
        tag = DEFAULT_TAG
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1:]
        parts = text.split("/")
        if len(parts) > 3:
            raise InvalidName(f"invalid model name {name!r}")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        for part in (namespace, model, tag):
            if not _PART.match(part) or ".." in part:
                raise InvalidName(f"invalid model name {name!r}")
        if not _HOST.match(host) or ".." in host:
            raise InvalidName(f"invalid model name {name!r}")
        return cls(host, namespace, model.lower(), tag)

    @property
    def short(self) -> str:
        """How Ollama displays a name: default host and namespace left out."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.short


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths (the only place they are built) --------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / check_digest(digest).replace(":", "-")

    def manifest_path(self, name: ModelName) -> Path:
        return self.root / "manifests" / name.host / name.namespace / name.model / name.tag

    # -- blobs ------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def add_blob_file(self, source: Path, digest: str | None = None, move: bool = False) -> Layer:
        """Copy (or move) a file into blobs/, verifying its sha256; never keeps a bad blob."""
        actual = sha256_file(source)
        if digest is not None and check_digest(digest) != actual:
            raise ValueError(f"sha256 mismatch: expected {digest}, got {actual}")
        target = self.blob_path(actual)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            tmp = target.with_name(target.name + ".partial")
            if move:
                shutil.move(str(source), tmp)
            else:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        return Layer("", actual, target.stat().st_size)

    def add_blob_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blob_path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                tmp.write(data)
            os.chmod(tmp.name, 0o644)
            os.replace(tmp.name, target)
        return digest

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
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)
        return self.manifest(name)

    def write_manifest_bytes(self, name: ModelName, raw: bytes) -> Manifest:
        """Keep a pulled manifest byte for byte (its digest is its identity); every digest in it
        is checked before it is written."""
        body = json.loads(raw)
        for obj in [body["config"], *body.get("layers", [])]:
            check_digest(obj["digest"])
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
        return self.manifest(name)

    def manifest(self, name: ModelName) -> Manifest:
        path = self.manifest_path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelNotFound(f"model '{name.short}' not found") from None
        body = json.loads(raw)

        def layer(obj: dict) -> Layer:
            return Layer(obj["mediaType"], check_digest(obj["digest"]), int(obj["size"]))

        return Manifest(
            name=name,
            config=layer(body["config"]),
            layers=tuple(layer(obj) for obj in body.get("layers", [])),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc),
            digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        )

    def model_file(self, name: ModelName) -> Path:
        """Path of the GGUF weights behind a model name."""
        layer = self.manifest(name).layer(MEDIA_MODEL)
        if layer is None:
            raise ModelNotFound(f"model '{name.short}' has no weights layer")
        path = self.blob_path(layer.digest)
        if not path.is_file():
            raise ModelNotFound(f"model '{name.short}' is missing its weights blob")
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
            if path.is_file() and not path.name.endswith(".partial"):
                host, namespace, model, tag = path.relative_to(base).parts
                try:
                    yield self.manifest(ModelName.parse(f"{host}/{namespace}/{model}:{tag}"))
                except (InvalidName, ValueError, KeyError):
                    continue  # a foreign or broken file in the store is not ours to list

    def copy(self, source: ModelName, destination: ModelName) -> Manifest:
        raw = self.manifest_path(source)
        if not raw.is_file():
            raise ModelNotFound(f"model '{source.short}' not found")
        target = self.manifest_path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(raw, tmp)
        os.replace(tmp, target)
        return self.manifest(destination)

    def delete(self, name: ModelName) -> None:
        manifest = self.manifest(name)
        self.manifest_path(name).unlink()
        still_used = {d for m in self.list() for d in [m.config.digest, *(l.digest for l in m.layers)]}
        for digest in [manifest.config.digest, *(l.digest for l in manifest.layers)]:
            if digest not in still_used:
                self.blob_path(digest).unlink(missing_ok=True)
