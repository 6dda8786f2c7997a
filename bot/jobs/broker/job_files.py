"""Where a broker worker keeps the input pictures of the job it renders: a folder of its own
under one root (``EASEL_DATA_DIR/job-inputs`` for ``easel worker``), never the system's
temporary folder. A job's files leave with its render, but a worker that ends abruptly (its
second stop signal, ``exit_process`` past the stop's budget, SIGKILL, out of memory) skips
that, and no /forget-me or retention sweep looks on a worker's machine: what it left goes when
a worker next starts on that root. Several workers may share the root (compose's
``worker-data`` volume): each holds a lock on its own folder while it runs, and a starting
worker removes only the folders whose lock nobody holds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["JobFiles", "JobFilesUnusable"]

LOCK_SUFFIX = ".lock"
# Held while a worker clears what ended workers left and makes its own folder: another
# starting worker never takes a folder just made, not locked yet, for one left.
STARTING_LOCK = "starting.lock"


class JobFilesUnusable(Exception):
    """The worker cannot keep its job folders under the root (another user's, read-only)."""


class JobFiles:
    """This worker's folder under ``root``, taken with ``take`` and given back with
    ``close``; ``folder`` holds one temporary folder a job while it renders."""

    def __init__(self, folder: Path, lock: int) -> None:
        self.folder = folder
        self._lock = lock

    @classmethod
    def take(cls, root: Path) -> JobFiles:
        """Remove what workers that ended left under ``root``, then make and lock this one's
        folder. Raises ``JobFilesUnusable`` when ``root`` cannot be written."""
        try:
            return cls._take(root)
        except OSError as error:
            where = "" if error.filename in (None, str(root)) else f": {error.filename}"
            raise JobFilesUnusable(
                f"{root} cannot hold this worker's job input pictures ({error.strerror}{where}): "
                "give the worker's user that folder, or remove it"
            ) from None

    @classmethod
    def _take(cls, root: Path) -> JobFiles:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(root / STARTING_LOCK):
            for left in root.glob(f"*{LOCK_SUFFIX}"):
                if left.name != STARTING_LOCK and _ended(left):
                    _remove(left.with_name(left.name.removesuffix(LOCK_SUFFIX)), left)
            for other in root.iterdir():  # a folder whose lock is gone: a removal cut short
                if other.is_dir() and not _lock_of(other).exists():
                    _remove(other, None)
            folder = Path(tempfile.mkdtemp(prefix=f"{socket.gethostname()}-", dir=root))
            held = os.open(_lock_of(folder), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(held, fcntl.LOCK_EX)
        return cls(folder, held)

    def close(self) -> None:
        """The folder goes (what a job still held in it too), then its lock."""
        _remove(self.folder, _lock_of(self.folder))
        os.close(self._lock)


def _lock_of(folder: Path) -> Path:
    return folder.with_name(folder.name + LOCK_SUFFIX)  # a host name may hold dots


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    held = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield
    finally:
        os.close(held)


def _ended(lock: Path) -> bool:
    """Whether the worker of ``lock`` ended: the lock is free (the system frees a process's
    locks however it ends)."""
    try:
        held = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False  # removed meanwhile by its own worker's close
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(held)
    return True


def _remove(folder: Path, lock: Path | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        lock.unlink(missing_ok=True)
