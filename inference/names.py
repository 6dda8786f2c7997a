"""The one form names are compared in: a file's, and a member's typed one."""

from __future__ import annotations

import unicodedata


def as_typed(name: str) -> str:
    """``name`` in NFC, the form keyboards send. macOS writes file names in NFD (``é`` as
    ``e`` and U+0301), which look the same but compare unequal: Easel calls each file (a
    model, LoRA, embedding, upscaler, wildcard) by this form of its name on disk and looks
    each typed name up in it, and opens the file by the path it listed, never one built from
    the name. Two files whose names differ only so are one name: the first listed keeps it,
    as on any other clash of names."""
    return unicodedata.normalize("NFC", name)
