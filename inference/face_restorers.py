"""Which installed face restorer a request means (no torch: admission asks it too, before the
queue, and the engine again at render)."""

from __future__ import annotations

import logging
from pathlib import Path

from inference.registry import FACE_RESTORER_FOLDERS, ModelRegistry
from inference.types import RenderInputError

log = logging.getLogger(__name__)


def resolve_face_restorer(registry: ModelRegistry, name: str | None) -> tuple[str, Path]:
    """``(name, file)`` for a restorer name in any letter case. None: the first by name whose
    name says GFPGAN or RestoreFormer, else the first by name (the web UI's ``GFPGAN/`` also
    holds the face detector and parser its library downloads, which are not restorers).
    The member reads the refusal: the folders to install one in go to the operator's log."""
    files = registry.face_restorer_files()
    if not files:
        folders = ", ".join(f"models/{folder}/" for folder in FACE_RESTORER_FOLDERS)
        log.warning(
            "face restoration asked and no face restorer is installed: put a GFPGAN or "
            "RestoreFormer .safetensors file in one of %s",
            folders,
        )
        raise RenderInputError(
            "face restoration (--restore-faces) needs a face restorer, and none is installed "
            "here; leave it out, or ask the bot's operator to install one"
        )
    if name is None:
        first = min(files, key=lambda stem: (not _names_a_restorer(stem), stem.casefold()))
        return first, files[first]
    for stem, path in files.items():
        if stem.casefold() == name.casefold():
            return stem, path
    raise RenderInputError(
        f"there is no face restorer {name!r} here; choose one of "
        f"{', '.join(sorted(files, key=str.casefold))}"
    )


def _names_a_restorer(stem: str) -> bool:
    return any(kind in stem.casefold() for kind in ("gfpgan", "restoreformer"))
