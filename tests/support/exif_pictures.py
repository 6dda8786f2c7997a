"""Pictures with an EXIF orientation where only a decoder finds it."""

from __future__ import annotations

import struct


def exif_after_pixels(png: bytes) -> bytes:
    """``png`` with its eXIf chunk moved after its IDAT (allowed): its header alone then shows
    no orientation."""
    start = png.index(b"eXIf") - 4
    end = start + 12 + struct.unpack(">I", png[start : start + 4])[0]
    chunk, rest = png[start:end], png[:start] + png[end:]
    at = rest.index(b"IEND") - 4
    return rest[:at] + chunk + rest[at:]
