"""A stored picture is known by its pixels (``bot.images.pixel_digest``): any lossless copy has
the same digest, whatever its PNG text, channels or format; a lossy copy or other pixels do
not."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot.images import pixel_digest, pixel_digest_of
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
