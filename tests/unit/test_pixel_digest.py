"""A stored picture is known by its pixels (``bot.images.pixel_digest``): any lossless copy has
the same digest, whatever its PNG text, channels or format; a lossy copy or other pixels do
not."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from bot.images import pixel_digest, pixel_digest_of
from inference.images import eight_bit
from inference.infotext import png_with_infotext


def noise(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def saved(picture: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def test_lossless_copies_share_the_pictures_digest() -> None:
    picture = noise()
    result = png_with_infotext(picture, "a cat\nSteps: 2, Seed: 1")
    digest = pixel_digest(picture)
    assert pixel_digest_of(result) == digest  # Easel's PNG holds the engine's pixels
    copies = {
        "without its text": saved(picture, "PNG"),
        "with an opaque alpha channel": saved(picture.convert("RGBA"), "PNG"),
        "as a lossless WebP": saved(picture, "WEBP", lossless=True),
    }
    for copy, data in copies.items():
        assert pixel_digest_of(data) == digest, copy
    few_colours = picture.quantize(16).convert("RGB")
    assert pixel_digest_of(saved(few_colours.quantize(16), "PNG")) == pixel_digest(few_colours)


def test_other_pixels_have_another_digest() -> None:
    picture = noise()
    digest = pixel_digest(picture)
    alpha = Image.new("L", picture.size, 255)
    alpha.putpixel((0, 0), 128)
    translucent = picture.copy()
    translucent.putalpha(alpha)  # the same colours, one pixel see-through
    others = {
        "a JPEG of it": pixel_digest_of(saved(picture, "JPEG", quality=95)),
        "another picture": pixel_digest(noise(1)),
        "one pixel translucent": pixel_digest(translucent),
        "the same bytes, another shape": pixel_digest(
            Image.frombytes("RGB", (48, 64), picture.tobytes())
        ),
    }
    for other, other_digest in others.items():
        assert other_digest != digest, other


def whole_picture_digest(picture: Image.Image) -> bytes:
    """The digest as first defined (migration 0014's stored digests): the whole picture
    converted, then its bytes hashed at once."""
    pixels = eight_bit(picture)
    if pixels.has_transparency_data:
        pixels = pixels.convert("RGBA")
        if pixels.getchannel("A").getextrema() == (255, 255):
            pixels = pixels.convert("RGB")
    else:
        pixels = pixels.convert("RGB")
    digest = hashlib.sha256(f"{pixels.mode} {pixels.width}x{pixels.height}\n".encode())
    digest.update(pixels.tobytes())
    return digest.digest()


def test_the_digest_hashed_in_strips_is_the_stored_one() -> None:
    """Pictures taller than a strip (and one row wider than it), in each mode a picture comes
    in, keep the digest stored for them before it was hashed a strip at a time."""
    rng = np.random.default_rng(7)
    tall = Image.fromarray(rng.integers(0, 256, (1500, 700, 3), dtype=np.uint8))
    translucent = tall.convert("RGBA")
    translucent.putpixel((3, 1400), (1, 2, 3, 4))
    palette = tall.quantize(64)  # seconds on noise this size: done once, copied
    palette_with_transparency = palette.copy()
    palette_with_transparency.info["transparency"] = 5
    wide_greys = Image.fromarray(rng.integers(0, 65536, (900, 400), dtype=np.uint16))
    pictures = {
        "RGB": tall,
        "RGBA, opaque": tall.convert("RGBA"),
        "RGBA, one pixel translucent": translucent,
        "a palette": palette,
        "a palette with a transparent entry": palette_with_transparency,
        "grey": tall.convert("L"),
        "grey with alpha": tall.convert("LA"),
        "16-bit grey": wide_greys,
        "CMYK": tall.convert("CMYK"),
        "one row wider than a strip": Image.new("RGB", (400_000, 3), (9, 8, 7)),
    }
    for kind, picture in pictures.items():
        assert pixel_digest(picture) == whole_picture_digest(picture), kind
        # Opened, not yet decoded: as an upload's or a worker's PNG is digested.
        stored = saved(picture, "TIFF" if picture.mode == "CMYK" else "PNG")
        assert pixel_digest_of(stored) == whole_picture_digest(picture), kind
