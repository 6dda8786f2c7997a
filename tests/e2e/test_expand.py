"""Zoom Out and the pan buttons: outpainting through the real path, original pixels kept."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, imagine
from tests.fake_discord import FakeDiscord


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def test_zoom_out_and_pan_grow_the_canvas_around_the_unchanged_picture(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        original = await imagine(fake_discord, "a lighthouse", steps=4)
        expand_ids = [c for c in original.custom_ids if c.startswith("easel:expand:")]
        assert [c.rsplit(":", 1)[1] for c in expand_ids] == ["zoom2", "left", "right", "up", "down"]
        assert original.component(label="Zoom Out (2x)")["custom_id"] == expand_ids[0]
        before = pixels(original.attachments[0].data)

        zoomed = await (
            await fake_discord.click(original, label="Zoom Out (2x)")
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        panned = await (
            await fake_discord.click(original, expand_ids[3])  # ⬆️
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

    after_zoom = pixels(zoomed.attachments[0].data)
    assert after_zoom.shape == (128, 128, 3)
    assert (after_zoom[32:96, 32:96] == before).all()  # the original sits in the middle

    after_pan = pixels(panned.attachments[0].data)
    assert after_pan.shape == (96, 64, 3)
    assert (after_pan[32:] == before).all()  # new sky on top, the picture below unchanged
