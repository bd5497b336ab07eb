"""Model names and blob digests, validated before any of them reaches a path.

Names follow Ollama's types/model/name.go: host/namespace/model:tag with its defaults, kept in the
case typed and compared ignoring case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import ClientError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
# Ollama's part rules (types/model/name.go): a letter, digit or '_' first; then also '-' and '_', plus
# '.' except in a namespace. A host is a name with an optional port (Ollama takes any ':').
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,252}(:[0-9]{1,5})?")


class InvalidName(ClientError):
    """A model name or digest that must not reach the filesystem."""


def check_digest(digest: str) -> str:
    """Canonical 'sha256:<hex>' form; raises InvalidName for anything else."""
    match = _DIGEST.match(digest or "")
    if not match:
        raise InvalidName(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return f"sha256:{match.group(1)}"


@dataclass(frozen=True, eq=False)
class ModelName:
    """host/namespace/model:tag as typed; == and hash() ignore case, as Ollama's EqualFold."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> ModelName:
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
        if not (_NAMESPACE.fullmatch(namespace) and _PART.fullmatch(model) and _PART.fullmatch(tag)
                and _HOST.fullmatch(host)) or ".." in host or ".." in model or ".." in tag:
            raise InvalidName(f"invalid model name {name!r}")
        _, _, port = host.partition(":")
        if port and not 0 < int(port) <= 65535:
            raise InvalidName(f"invalid model name {name!r}: port {port} is not in 1-65535")
        return cls(host, namespace, model, tag)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What two names that are the same model share (the parts are ASCII, so lower() is exact)."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelName) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def repository(self) -> str:
        """namespace/model: the repository a registry knows the model by."""
        return f"{self.namespace}/{self.model}"

    @property
    def short(self) -> str:
        """How Ollama displays a name (DisplayShortest): default host and namespace left out."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.short
