"""/imagine with a control picture through the fake Discord: the upload steers a real tiny
render through the queue, the PNG records the ControlNet, bad control inputs are refused with
one sentence before anything is queued, and the picture is the member's: /forget-me erases it."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from bot.settings import Settings
from db import jobs as journal
from db.database import connect
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, forget_me, has_picture
from tests.e2e.test_edits import inputs_of
from tests.fake_discord import FakeDiscord


def edges_png() -> bytes:
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), fill="white")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_imagine_with_a_control_picture(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    control = {"control": ("edges.png", edges_png())}
    refusals: list[tuple[dict[str, object], dict[str, tuple[str, bytes]], str]] = [
        (
            {"control_type": "canny"},
            {"control": ("notes.txt", b"just some text")},
            "not a readable image",
        ),
        ({}, control, "Say what the control picture is with `control_type`"),
        (
            {"control_type": "depth"},
            control,
            "The depth control's annotator is not installed on this server: ask an admin, or send",
        ),
        (
            {"control_type": "canny", "control_start": 0.9, "control_end": 0.1},
            control,
            "Control start (0.9) must not be after control end (0.1)",
        ),
    ]
    async with start_easel() as bot:
        for options, files, expected in refusals:
            handle = await fake_discord.invoke_command(
                "imagine", {"prompt": "a cat", **QUICK, **options}, attachments=files
            )
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral and expected in reply.content, reply.content
            assert "\n" not in reply.content
        assert bot.queue.queued_count() == 0
        assert inputs_of(easel_settings_for_test) == []  # refused uploads are not kept

        handle = await fake_discord.invoke_command(
            "imagine",
            {"prompt": "a cat", **QUICK, "control_type": "canny", "control_weight": 0.8},
            attachments=control,
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        value = str(parse_infotext(infotext)[2]["ControlNet 0"])
        assert value.startswith("Module: canny, Model: tiny-controlnet [")
        assert "Weight: 0.8" in value
        [kept] = inputs_of(easel_settings_for_test)  # the accepted job's control picture
        conn = await connect(easel_settings_for_test.database_path)
        try:  # retention keeps what a journaled job reads
            named = f"inputs/{kept.name}"  # by its place in the data folder
            assert named in await journal.input_picture_paths(conn)
        finally:
            await conn.close()

        forgotten = await (await forget_me(fake_discord)).wait_for_answer()
        assert "1 uploaded picture and" in forgotten.content, forgotten.content
        assert inputs_of(easel_settings_for_test) == []
