"""Blobs on their way into the store: a write hashed as it goes (BlobWriter) and a resumable
download (PartialBlob); both keep bytes only when their sha256 is the digest they came as."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from corral.errors import ClientError
from corral.models.names import check_digest
from corral.models.safe_files import CHUNK, Temporary

if TYPE_CHECKING:
    from corral.models.store import Layer, Store


class BlobMismatch(ClientError):
    """Bytes whose sha256 is not the digest they came as; they are never kept."""


class BlobWriter:
    """Bytes on their way into blobs/, hashed as they are written. commit() keeps them when they
    match the digest they were promised as (if any); leaving the `with` block without a commit, or
    any error, removes the temporary."""

    def __init__(self, store: Store, expected: str | None) -> None:
        self._store = store
        self.expected = check_digest(expected) if expected is not None else None
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False
        with store._space("writing a blob"):
            store._mkdirs(store.root / "blobs")
            self._tmp = Temporary(store.root / "blobs", store._file_mode())

    def write(self, data: bytes | bytearray) -> None:
        try:
            with self._store._space("writing a blob"):
                self._tmp.file.write(data)
        except BaseException:
            self.close()
            raise
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> tuple[Layer, bool]:
        """The blob's layer (no media type) and whether this write added it to the store."""
        from corral.models.store import Layer  # store.py imports this module

        digest = "sha256:" + self._hash.hexdigest()
        try:
            if self.expected is not None and digest != self.expected:
                raise BlobMismatch(f"digest mismatch: body is {digest}, not {self.expected}")
            target = self._store.blob_path(digest)
            created = not target.exists()
            if created:
                with self._store._space(f"writing blob {digest}"):
                    self._tmp.commit(target)
                self._done = True
            return Layer("", digest, self.size), created
        finally:
            self.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._tmp.discard()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PartialBlob:
    """A download into blobs/sha256-<hex>-partial, which a later pull resumes (Ollama's naming).
    The caller holds its lock (Store.partial_blob); finish() verifies and moves it into place."""

    def __init__(self, store: Store, digest: str, fd: int) -> None:
        self._store, self.digest, self._fd = store, digest, fd
        os.lseek(fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def restart(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with self._store._space(f"downloading blob {self.digest}"):
            while view:
                view = view[os.write(self._fd, view):]

    def finish(self) -> None:
        h = hashlib.sha256()
        offset = 0
        while block := os.pread(self._fd, CHUNK, offset):
            h.update(block)
            offset += len(block)
        path = self._store.partial_path(self.digest)
        if "sha256:" + h.hexdigest() != self.digest:
            path.unlink(missing_ok=True)
            raise BlobMismatch(f"blob {self.digest} failed verification (got sha256:{h.hexdigest()}); not kept")
        os.replace(path, self._store.blob_path(self.digest))
