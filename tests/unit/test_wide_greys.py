"""16-bit greyscale uploads (real 16-bit PNGs) become 8-bit pictures by scaling, not by
Pillow's clipping conversion (which turns a grey of 40000 into white), on the bot's side
(``bot.images.decoded_upload``) and the engine's (``inference.images.load_input_image``)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bot.images import decoded_upload
from inference.images import eight_bit, load_input_image, prepare_mask
from inference.infotext import infotext_from_png

GREY_16, GREY_8 = 40000, 156  # 40000 / 65535 of 255
KEEP_16 = 20000  # a dark grey in a mask: under the threshold, so kept


def sixteen_bit_grey_png(values: np.ndarray, infotext: str | None = None) -> bytes:
    """A greyscale PNG with 16 bits a sample, as a scanner or an editor writes one."""
    chunks = PngInfo()
    if infotext is not None:
        chunks.add_text("parameters", infotext)
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG", pnginfo=chunks)
    data = buffer.getvalue()
    bit_depth, colour_type = data[24], data[25]  # from IHDR
    assert (bit_depth, colour_type) == (16, 0)
    return data


def sixteen_bit_rgb_png(value: int, size: int = 16) -> bytes:
    """A 16-bit RGB PNG written by hand (Pillow writes none)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\0" + np.full((size, 3), value, ">u2").tobytes()
    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def saved(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    return path


def test_the_engine_scales_a_16_bit_grey_picture(tmp_path: Path) -> None:
    values = np.full((16, 16), GREY_16)
    values[0, 0], values[0, 1] = 0, 65535
    picture = load_input_image(saved(tmp_path, sixteen_bit_grey_png(values)), "init image")
    assert picture.mode == "RGB"
    assert picture.getpixel((5, 5)) == (GREY_8,) * 3
    assert picture.getpixel((0, 0)) == (0, 0, 0) and picture.getpixel((1, 0)) == (255, 255, 255)


def test_a_16_bit_rgb_png_loads_scaled(tmp_path: Path) -> None:
    picture = load_input_image(saved(tmp_path, sixteen_bit_rgb_png(GREY_16)), "init image")
    assert picture.getpixel((3, 3)) == (GREY_8,) * 3


def test_a_16_bit_mask_keeps_white_white_and_dark_grey_kept(tmp_path: Path) -> None:
    values = np.full((32, 32), KEEP_16)
    values[8:24, 8:24] = 65535
    mask = load_input_image(saved(tmp_path, sixteen_bit_grey_png(values)), "mask image")
    prepared = prepare_mask(mask, (32, 32), blur=0, invert=False)
    assert prepared.getpixel((16, 16)) == 255  # white: repaint
    assert prepared.getpixel((2, 2)) == 0  # dark grey: keep (clipped, it was white)


def test_the_bot_stores_a_16_bit_upload_as_8_bit_with_its_infotext() -> None:
    upload = sixteen_bit_grey_png(np.full((16, 16), GREY_16), "a fox")
    stored = decoded_upload("grey.png", upload, digest=False, as_png=True).png
    assert stored is not None
    with Image.open(io.BytesIO(stored)) as picture:
        assert picture.mode == "L" and picture.getpixel((4, 4)) == GREY_8
    assert infotext_from_png(stored) == "a fox"


def test_an_8_bit_png_is_stored_as_it_came() -> None:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, format="PNG")
    stored = decoded_upload("grey.png", buffer.getvalue(), digest=False, as_png=True).png
    assert stored == buffer.getvalue()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_every_wide_grey_mode_is_scaled(mode: str) -> None:
    picture = Image.new(mode, (4, 4), GREY_16)
    assert eight_bit(picture).getpixel((1, 1)) == GREY_8
