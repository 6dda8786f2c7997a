"""Pictures made of very many pieces (audit A1's chunky PNG, a JPEG of comments), and a record
of the Pillow opens that Easel's own code makes on the event loop."""

from __future__ import annotations

import asyncio
import io
import struct
import traceback
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

_PROJECT = Path(__file__).resolve().parents[2]
_EASEL_CODE = (str(_PROJECT / "bot") + "/", str(_PROJECT / "cogs") + "/")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def plain_png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, format="PNG")
    return buffer.getvalue()


def chunky_png(empty_chunks: int, kind: bytes = b"tEST") -> bytes:
    """A plain 64x64 PNG with ``empty_chunks`` empty chunks of ``kind`` before its pixels."""
    png = plain_png()
    header_end = 8 + 25  # the signature, then IHDR's 13 bytes in a chunk
    return png[:header_end] + png_chunk(kind, b"") * empty_chunks + png[header_end:]


@contextmanager
def pillow_opens_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Where (file:line) Easel's code (``bot``, ``cogs``) called ``PIL.Image.open`` on a thread
    that runs an event loop, while the block runs; a worker thread has none."""
    on_the_loop: list[str] = []
    real_open = Image.open

    def recording_open(*args: object, **kwargs: object) -> Image.Image:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread
            return real_open(*args, **kwargs)  # type: ignore[arg-type]
        on_the_loop.extend(
            f"{frame.filename}:{frame.lineno}"
            for frame in traceback.extract_stack()
            if frame.filename.startswith(_EASEL_CODE)
        )
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", recording_open)
        yield on_the_loop
