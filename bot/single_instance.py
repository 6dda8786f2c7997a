"""One serving Easel per data folder. A second ``easel run`` on the same EASEL_DATA_DIR would
take the first's running jobs for ones a crash left and render them again, so ``easel run``
holds an exclusive lock on the folder itself for its whole life and a second start refuses.
The kernel drops the lock with the process that held it, so a crash leaves nothing stale; and
the lock needs no file of its own, which a full disk (no free inode) or another user's copy
(after one ``sudo easel run``) would keep from being made. Only the serving process takes it:
``easel doctor`` and the other commands work beside a bot."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from bot.settings import SettingsError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Who holds the lock, for a refused start's message alone: the lock holds without it.
HOLDER_FILE_NAME = "easel.pid"
# The most of the holder's file read: a pid, a space, a host name (at most 255 bytes).
_HOLDER_BYTES = 300


class DataDirInUse(Exception):
    """Another process serves from this data folder."""


class DataDirLock:
    """The held lock (the open folder); ``release`` lets the next start take it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the folder drops its flock
            self._fd = None


def hold_data_dir(data_dir: Path) -> DataDirLock:
    """Take ``data_dir``'s lock (the folder exists) and say in a file there which process
    holds it, or raise ``DataDirInUse`` naming the folder and the holder (``SettingsError``
    when the folder cannot be opened). Where the folder cannot be locked (no flock: Windows,
    or a file system refusing it), a warning says so and the start goes on."""
    where = data_dir.resolve()
    if fcntl is None:
        _unlocked(where, "no file locks here (fcntl)")
        return DataDirLock(None)
    try:
        fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        raise SettingsError(
            f"EASEL_DATA_DIR={str(data_dir)!r}: cannot open the folder to lock it "
            f"({error.strerror or error})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(
            f"another Easel is running on EASEL_DATA_DIR={where} ({_holder(data_dir)}): "
            "stop it first, or give this one another folder"
        ) from None
    except OSError as error:  # a network file system without flock on folders, say
        os.close(fd)
        _unlocked(where, f"the folder cannot be locked ({error.strerror or error})")
        return DataDirLock(None)
    _write_holder(data_dir)
    return DataDirLock(fd)


def _unlocked(where: Path, why: str) -> None:
    log.warning("%s: nothing stops a second Easel on EASEL_DATA_DIR=%s", why, where)


def _write_holder(data_dir: Path) -> None:
    """This process's id and host (another container's pids are its own) in the holder's
    file. Best effort: a full disk or a file another user owns leaves none, never another
    holder's (removed first: the folder is this user's)."""
    path = data_dir / HOLDER_FILE_NAME
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _holder(data_dir: Path) -> str:
    """The holder as "pid N on host H", from its file (it may not have written it yet)."""
    try:
        with (data_dir / HOLDER_FILE_NAME).open("rb") as file:
            text = file.read(_HOLDER_BYTES).decode(errors="replace")
    except OSError:
        text = ""
    pid, _, host = text.strip().partition(" ")
    if not pid.isdigit():
        return "pid unknown"
    return f"pid {pid} on host {host}" if host else f"pid {pid}"
