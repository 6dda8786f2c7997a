"""Uploads made of very many pieces (bot.image_segments, through bot.images.check_image):
refused from their headers before Pillow walks them (audit A1: a 10 MiB PNG of 870,000 empty
chunks cost seconds per check); real pictures, however their encoder cut them, pass. And the
engine's side range, held at the upload check of a job's input."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from bot import images
from bot.image_segments import (
    MAX_JPEG_HEADER_SEGMENTS,
    MAX_PNG_DATA_CHUNKS,
    MAX_PNG_OTHER_CHUNKS,
    PNG_SIGNATURE,
)
from bot.images import MAX_UPLOAD_BYTES, check_image, decoded_upload
from bot.user_errors import UserError
from tests.support.chunky_files import chunky_png, plain_png, png_chunk


def pillow_opens(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """One entry per ``Image.open`` that bot.images makes."""
    opened: list[None] = []
    real_open = Image.open

    def counting_open(*args: object, **kwargs: object) -> Image.Image:
        opened.append(None)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images.Image, "open", counting_open)
    return opened


def rechunked(png: bytes, data_chunk_bytes: int) -> bytes:
    """``png`` with its pixel data cut into IDAT chunks of ``data_chunk_bytes`` (as libpng, or
    an encoder writing row by row, cuts it)."""
    position, head, pixels, tail = len(PNG_SIGNATURE), b"", b"", b""
    while position < len(png):
        (length, kind) = struct.unpack_from(">I4s", png, position)
        chunk = png[position : position + 12 + length]
        if kind == b"IDAT":
            pixels += chunk[8 : 8 + length]
        elif pixels:
            tail += chunk
        else:
            head += chunk
        position += 12 + length
    pieces = (pixels[at : at + data_chunk_bytes] for at in range(0, len(pixels), data_chunk_bytes))
    return PNG_SIGNATURE + head + b"".join(png_chunk(b"IDAT", p) for p in pieces) + tail


def jpeg(**save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def test_the_audits_chunky_png_is_refused_before_pillow_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = pillow_opens(monkeypatch)
    empty_chunk_bytes = 12
    attack = chunky_png((MAX_UPLOAD_BYTES - 1024) // empty_chunk_bytes)
    with pytest.raises(UserError, match=f"more than {MAX_PNG_OTHER_CHUNKS:,} chunks besides"):
        check_image("chunky.png", attack)
    empty_pixel_chunks = chunky_png(MAX_PNG_DATA_CHUNKS + 1, kind=b"IDAT")
    with pytest.raises(UserError, match=f"more than {MAX_PNG_DATA_CHUNKS:,} chunks of image"):
        decoded_upload("chunky.png", empty_pixel_chunks, digest=True, as_png=True)
    assert opened == []


def test_a_jpeg_of_many_segments_or_stray_bytes_is_refused_before_pillow_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = pillow_opens(monkeypatch)
    photo = jpeg()
    comment = b"\xff\xfe\x00\x02"  # an empty COM segment
    many_comments = photo[:2] + comment * (MAX_JPEG_HEADER_SEGMENTS + 1) + photo[2:]
    stray_bytes = photo[:2] + b"\xff" + b"\0" * MAX_JPEG_HEADER_SEGMENTS + photo[2:]
    fill_bytes = photo[:2] + b"\xff" * (MAX_JPEG_HEADER_SEGMENTS + 1) + photo[2:]
    for attack in (many_comments, stray_bytes, fill_bytes):
        with pytest.raises(UserError, match=f"more than {MAX_JPEG_HEADER_SEGMENTS:,} segments"):
            check_image("chunky.jpg", attack)
    assert opened == []


def test_real_pictures_pass_however_their_encoder_cut_them() -> None:
    noise = np.random.default_rng(7).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    pillows = buffer.getvalue()  # 64 KiB IDATs, as Easel and the web UI save
    # libpng's 8 KiB, and one chunk per row of a 4096-row picture of this file's size.
    for data_chunk_bytes in (8192, len(pillows) // 4096):
        cut = rechunked(pillows, data_chunk_bytes)
        assert cut.count(b"IDAT") > 300
        upload = decoded_upload("photo.png", cut, digest=False, as_png=True)
        assert upload.png is not None
        with Image.open(io.BytesIO(upload.png)) as decoded:
            assert np.array_equal(np.asarray(decoded), noise)
    # A JPEG with a large colour profile, saved in 64 KiB segments, and EXIF.
    profiled = jpeg(icc_profile=b"\0" * 2**20, exif=Image.Exif())
    assert check_image("photo.jpg", profiled).format == "JPEG"
    assert check_image("small.png", plain_png()).width == 64


@pytest.mark.parametrize(("size", "shown"), [((4, 4), "4x4"), ((8192, 2048), "8192x2048")])
def test_a_jobs_input_is_held_to_the_engines_side_range(size: tuple[int, int], shown: str) -> None:
    data = plain_png(size)
    with pytest.raises(UserError, match=f"{shown} pixels; each side must be between 8 and 4096"):
        decoded_upload("odd.png", data, digest=True, as_png=True)
    # Read only (/info, /use-settings): any side, within the pixel cap.
    assert decoded_upload("odd.png", data, digest=True, as_png=False).image.width == size[0]
