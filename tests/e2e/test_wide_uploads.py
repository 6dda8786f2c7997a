"""A 16-bit greyscale picture and mask through /inpaint, the fake Discord and the real tiny
model: the picture's grey stays grey (not clipped to white) and only the mask's white is
repainted (its dark grey, clipped, would have been white too)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.fake_discord import FakeDiscord
from tests.unit.test_wide_greys import GREY_8, GREY_16, KEEP_16, sixteen_bit_grey_png


async def test_inpaint_with_16_bit_grey_picture_and_mask(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    mask = np.full((64, 64), KEEP_16)
    mask[16:48, 16:48] = 65535
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "inpaint",
            {"prompt": "a green hat", "denoise": 1.0, "mask_blur": 0, "fill": "latent noise"},
            attachments={
                "image": ("scan.png", sixteen_bit_grey_png(np.full((64, 64), GREY_16))),
                "mask": ("mask.png", sixteen_bit_grey_png(mask)),
            },
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    with Image.open(io.BytesIO(result.attachments[0].data)) as image:
        rgb = image.convert("RGB")
    assert rgb.getpixel((2, 2)) == (GREY_8,) * 3  # outside the mask: the grey, untouched
    assert rgb.getpixel((32, 32)) != (GREY_8,) * 3  # inside: repainted
