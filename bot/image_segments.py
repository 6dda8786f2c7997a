"""How many pieces an uploaded PNG or JPEG is made of, counted from their headers alone, before
Pillow reads it (pure: no discord, no torch).

Pillow walks a PNG's chunks, and a JPEG's marker segments up to its first scan, one by one in
Python, a few microseconds each: a 10 MiB PNG of some 870,000 empty chunks cost about 6 s of
CPU per check (audit A1). This walk stops at the limit, so it costs at most that many steps.

The same walk gives a PNG upload's pixels and colours without what else it carries
(``png_without_metadata``).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

from PIL.PngImagePlugin import PngInfo, putchunk

from bot.user_errors import UserError
from inference.infotext import PNG_TEXT_KEY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PNG's pixels come in IDAT chunks (an animated PNG's frames in fdAT): Pillow (Easel's results,
# the web UI's) writes them 64 KiB each, about 160 in a 10 MiB file; libpng 8 KiB each, about
# 1,280. An encoder that writes one per row of an interlaced 4096-row picture writes some 7,700.
MAX_PNG_DATA_CHUNKS = 16_384
_PNG_DATA_CHUNK_TYPES = (b"IDAT", b"fdAT")
# Every other chunk (header, palette, colour, text, an animation's frame headers): a saved
# picture has a handful, an animated PNG one more per frame.
MAX_PNG_OTHER_CHUNKS = 1_024
_PNG_CHUNK_HEAD = struct.Struct(">I4s")  # length, type; then the data and a 4-byte CRC
_PNG_END = b"IEND"
# What a stored upload keeps of a PNG's own chunks: its pixels (header, palette, transparency,
# data) and how their colours are meant (gamma, chromaticities, sRGB, ICC profile). Left out:
# EXIF (a phone's GPS position), every text (an app's comments; the web UI's ``parameters`` is
# written anew: ``png_without_metadata``), XMP and every other chunk.
_PNG_KEPT_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"tRNS", b"IDAT", _PNG_END, b"gAMA", b"cHRM", b"sRGB", b"iCCP"}
)

JPEG_START = b"\xff\xd8"
# Segments before the first scan (what Pillow reads in Python), fill bytes and stray bytes
# between them counted as one each: a photo has 10 to 30 (a large ICC profile is split into
# 64 KiB segments: about 160 for a 10 MiB one).
MAX_JPEG_HEADER_SEGMENTS = 1_024
_JPEG_START_OF_SCAN = 0xDA
_JPEG_END = 0xD9
# Markers that stand alone, without a length: an escaped 0xFF (0x00), TEM, the restart markers
# RST0-RST7 and the start of the picture.
_JPEG_BARE_MARKERS = frozenset({0x00, 0x01, *range(0xD0, 0xD9)})


def check_segment_count(name: str, data: bytes) -> None:
    """Refuse a PNG or JPEG made of more pieces than a saved picture has; other files (and
    what is cut short) are left to Pillow's own checks."""
    if data.startswith(PNG_SIGNATURE):
        _check_png_chunks(name, data)
    elif data.startswith(JPEG_START):
        _check_jpeg_segments(name, data)


def png_without_metadata(data: bytes, infotext: str | None) -> bytes:
    """A PNG (already checked and decoded) with only the chunks that make its picture
    (``_PNG_KEPT_CHUNKS``), each copied whole (the same pixels, undecoded), and ``infotext``
    as its one ``parameters`` text, before its image data (None: no text). The engine reads
    that text of the stored copy (a fast upscale carries the picture's own settings and seed
    over: ``inference.passes.picture_prompts``): written anew, it is the text the bot read and
    bounded (``bot.images.decoded_upload``), whatever other copies of it, compressed or not,
    the upload carried."""
    text = _text_chunks(infotext)
    kept = [PNG_SIGNATURE]
    for kind, start, end in _png_chunks(data):
        if kind == b"IDAT":
            kept.append(text)
            text = b""
        if kind in _PNG_KEPT_CHUNKS:
            kept.append(data[start:end])
    return b"".join(kept)


def _text_chunks(infotext: str | None) -> bytes:
    """``infotext`` as PNG chunks, written as Easel writes its own PNGs' (tEXt, or iTXt when not
    Latin-1: ``inference.infotext.png_with_infotext``)."""
    if infotext is None:
        return b""
    metadata = PngInfo()
    metadata.add_text(PNG_TEXT_KEY, infotext)
    chunks = io.BytesIO()
    for chunk_type, chunk_data, _ in metadata.chunks:
        putchunk(chunks, chunk_type, chunk_data)
    return chunks.getvalue()


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk of a PNG after its signature, up to IEND: its type and where its bytes
    (length, type, data and CRC) start and end."""
    position = len(PNG_SIGNATURE)
    while position + _PNG_CHUNK_HEAD.size <= len(data):
        length, chunk_type = _PNG_CHUNK_HEAD.unpack_from(data, position)
        end = position + _PNG_CHUNK_HEAD.size + length + 4
        yield chunk_type, position, end
        if chunk_type == _PNG_END:
            return
        position = end


def _check_png_chunks(name: str, data: bytes) -> None:
    data_chunks = other_chunks = 0
    for chunk_type, _, _ in _png_chunks(data):
        if chunk_type in _PNG_DATA_CHUNK_TYPES:
            data_chunks += 1
            if data_chunks > MAX_PNG_DATA_CHUNKS:
                raise _too_many(name, f"{MAX_PNG_DATA_CHUNKS:,} chunks of image data")
        else:
            other_chunks += 1
            if other_chunks > MAX_PNG_OTHER_CHUNKS:
                raise _too_many(name, f"{MAX_PNG_OTHER_CHUNKS:,} chunks besides its image data")


def _check_jpeg_segments(name: str, data: bytes) -> None:
    steps = 0
    position = len(JPEG_START)
    while position + 1 < len(data):
        steps += 1
        if steps > MAX_JPEG_HEADER_SEGMENTS:
            raise _too_many(name, f"{MAX_JPEG_HEADER_SEGMENTS:,} segments before its image data")
        marker = data[position + 1]
        if data[position] != 0xFF or marker == 0xFF:  # a stray byte, a fill byte
            position += 1
            continue
        if marker in (_JPEG_START_OF_SCAN, _JPEG_END):
            return
        position += 2
        if marker not in _JPEG_BARE_MARKERS:
            if position + 2 > len(data):
                return
            (length,) = struct.unpack_from(">H", data, position)
            position += length


def _too_many(name: str, limit: str) -> UserError:
    return UserError(
        f"{name!r} is made of more than {limit}; a saved picture has far fewer. Save it again "
        "with an image app, then attach it."
    )
