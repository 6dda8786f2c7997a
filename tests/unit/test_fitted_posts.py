"""A result's picture is fitted to the limit of where it goes; refused as too large all the
same (the server lost a boost since Easel read its limit), it goes again as a preview under
the smallest limit, never lost; the queue knows each such preview by its pixels."""

from __future__ import annotations

import io
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any, cast

import discord
import numpy as np
import pytest
from PIL import Image

from bot import images
from bot.images import fit_under, pixel_digest_of
from bot.jobs.queue import ends
from cogs.results import fitted
from cogs.results.fitted import ResultPost
from inference.types import RenderedImage, RenderRequest

TOO_LARGE = discord.HTTPException(
    cast(Any, SimpleNamespace(status=413, reason="Payload Too Large")),
    {"code": 40005, "message": "Request entity too large"},
)


def noisy_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_picture_refused_as_too_large_goes_again_under_the_smallest_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smallest = 4_000
    monkeypatch.setattr(fitted, "SMALLEST_UPLOAD_LIMIT", smallest)
    png = noisy_png(64)
    sent: list[tuple[str, str, int]] = []  # text, file name, size

    async def send(text: str, files: list[discord.File]) -> str:
        [file] = files
        sent.append((text, file.filename, len(file.fp.read())))
        if len(sent) == 1:
            raise TOO_LARGE
        return "posted"

    post = ResultPost("0123456789abcdef", "a cat", png, spoiler=False, description="a cat")
    assert await post.send(len(png), send) == "posted"
    (first_text, first_name, first_size), (text, name, size) = sent
    assert (first_text, first_name, first_size) == ("a cat", "easel-0123456789abcdef.png", len(png))
    assert name.endswith(".jpg") and size <= smallest
    assert "smaller preview" in text and "`/show 0123456789abcdef`" in text


async def test_a_picture_refused_under_the_smallest_limit_is_not_sent_again() -> None:
    calls = 0

    async def send(text: str, files: list[discord.File]) -> None:
        nonlocal calls
        calls += 1
        raise TOO_LARGE

    post = ResultPost(
        "0123456789abcdef", "a cat", noisy_png(16), spoiler=False, description="a cat"
    )
    with pytest.raises(discord.HTTPException):
        await post.send(fitted.SMALLEST_UPLOAD_LIMIT, send)
    assert calls == 1


def test_the_queue_digests_the_preview_under_each_limit_the_delivery_may_fit_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smallest = 2_000
    monkeypatch.setattr(ends, "DEFAULT_FILESIZE_LIMIT", smallest)
    png = noisy_png(64)
    picture = RenderedImage(encoded=png, seed=1, infotext="a cat", width=64, height=64)
    interactions = len(png) // 2  # a Nitro member's, over the smallest
    digests = ends.posted_digests(RenderRequest(prompt="a cat"), [picture], None, interactions)
    previews = [fit_under(png, limit) for limit in (interactions, smallest)]
    assert all(preview.is_preview for preview in previews)
    assert previews[0].data != previews[1].data
    assert sorted(digests) == sorted(pixel_digest_of(preview.data) for preview in previews)


def test_the_delivery_reuses_the_fit_the_queue_made_to_digest_the_preview(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An oversized result is fitted once under each limit: the queue's fit for its
    preview's digest is the one the delivery posts (each fit re-encodes: seconds of CPU for a
    large grid), not made again."""
    monkeypatch.setattr(images, "_fits_kept", OrderedDict())  # none fitted by another test
    png = noisy_png(96)
    picture = RenderedImage(encoded=png, seed=1, infotext="a cat", width=96, height=96)
    interactions = len(png) // 2
    encodes = 0
    save = Image.Image.save

    def counted_save(image: Image.Image, *args: Any, **options: Any) -> None:
        nonlocal encodes
        encodes += 1
        save(image, *args, **options)

    monkeypatch.setattr(Image.Image, "save", counted_save)
    [digest] = ends.posted_digests(RenderRequest(prompt="a cat"), [picture], None, interactions)
    assert encodes > 0
    encoded_by_the_queue = encodes
    file, is_preview = fitted.fitted_file(
        png, "easel-job", interactions, spoiler=False, description="a cat"
    )
    assert encodes == encoded_by_the_queue  # the delivery's fit: the queue's, not made again
    assert is_preview and pixel_digest_of(file.fp.read()) == digest


def test_the_fits_kept_are_bounded_by_their_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept fits hold at most ``FITS_KEPT_BYTES`` (a fit under a Nitro limit is up to
    100 MB): the oldest go first, and a fit larger than the bound is not kept."""
    older, newer = noisy_png(64), noisy_png(80)
    limit = len(older) // 2
    sizes = [len(fit_under(png, limit).data) for png in (older, newer)]
    monkeypatch.setattr(images, "FITS_KEPT_BYTES", max(sizes))  # either, not both
    monkeypatch.setattr(images, "_fits_kept", OrderedDict())
    kept_older = fit_under(older, limit)
    assert fit_under(older, limit) is kept_older
    kept_newer = fit_under(newer, limit)
    assert fit_under(newer, limit) is kept_newer
    assert fit_under(older, limit) is not kept_older  # it went to make room
    monkeypatch.setattr(images, "FITS_KEPT_BYTES", min(sizes) - 1)
    assert fit_under(newer, limit) is not fit_under(newer, limit)  # too large to keep
