"""Files written safely under the store: beside their final place under a dot name, flocked while
open, renamed into place when complete; a full disk is a StorageFull (507); leftovers nobody holds
are recognised as stale (see store.py's docstring for the whole rule)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from corral.errors import InsufficientStorage

TEMP_PREFIX = ".corral-tmp-"
STALE_AFTER_S = 10.0
CHUNK = 1 << 20
_FULL = (errno.ENOSPC, errno.EDQUOT)


class StorageFull(InsufficientStorage):
    """No space (or quota) left under the store. Nothing half-written is left behind."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return "sha256:" + h.hexdigest()


@contextmanager
def disk_space(what: str, root: Path) -> Iterator[None]:
    """ENOSPC / EDQUOT become StorageFull (507) with a message a person can act on."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(f"no space left on device: {what} in {root}") from exc
        raise


class Temporary:
    """A file being written beside its final place, under a dot name, flocked while it is open."""

    def __init__(self, directory: Path, mode: int) -> None:
        self.path = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.file = os.fdopen(fd, "wb", buffering=CHUNK)

    def commit(self, target: Path) -> None:
        self.file.flush()  # a full disk shows here, before anything is renamed
        os.replace(self.path, target)
        self.file.close()

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # the flush of a full disk fails again; the file goes all the same
        self.path.unlink(missing_ok=True)


def open_locked(path: Path, mode: int) -> int:
    """Open (creating) and lock a file; if a sweep removed it between the open and the lock, the
    lock is on a file no longer there, so open the path again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_if_stale(path: Path) -> bool:
    try:
        info = path.lstat()
        if time.time() - info.st_mtime < STALE_AFTER_S:
            return False
        if stat.S_ISDIR(info.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        elif stat.S_ISREG(info.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            return False  # not something corral writes
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        if os.fstat(fd).st_ino != info.st_ino:
            return False
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
