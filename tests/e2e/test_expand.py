"""Zoom Out and the pan buttons: outpainting through the real path, original pixels kept."""

from __future__ import annotations

import dataclasses
import io
import sqlite3

import numpy as np
from PIL import Image

from bot.jobs.accounting import estimated_cost
from bot.settings import Settings
from inference.types import RenderRequest
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, imagine
from tests.fake_discord import FakeDiscord


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def test_zoom_out_and_pan_grow_the_canvas_around_the_unchanged_picture(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
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

    # Each reserved the GPU time of the canvas it renders, not of the picture it grows.
    with sqlite3.connect(easel_settings_for_test.database_path) as db:
        reserved = db.execute(
            "SELECT j.request_json, q.gpu_seconds FROM jobs j JOIN quota_ledger q"
            " ON q.job_id = j.id AND q.kind = 'reserve' WHERE j.kind = 'expand' ORDER BY j.rowid"
        ).fetchall()
    canvases = [(128, 128), (64, 96)]
    assert len(reserved) == len(canvases)
    for (request_json, gpu_seconds), (width, height) in zip(reserved, canvases, strict=True):
        request = RenderRequest.from_json(request_json)
        at_the_canvas = dataclasses.replace(request, width=width, height=height)
        at_the_picture = dataclasses.replace(request, width=64, height=64)
        assert gpu_seconds == estimated_cost(at_the_canvas).gpu_seconds
        assert gpu_seconds > estimated_cost(at_the_picture).gpu_seconds
