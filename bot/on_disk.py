"""Waiting until what was written is on disk, by path (a file's contents, a folder's names)."""

from __future__ import annotations

import os
from pathlib import Path


def put_on_disk(path: Path) -> None:
    """Return once what was written to ``path`` is on disk: a file's contents, or a folder's
    names (a file created or renamed in it; on POSIX only: Windows opens no folder so).
    Blocking: called off the event loop. A missing ``path`` raises ``FileNotFoundError``."""
    if path.is_dir():
        if os.name != "posix":
            return
        flags = os.O_RDONLY | os.O_DIRECTORY
    else:
        flags = os.O_RDONLY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
