"""Uploads through the fake Discord that Easel must refuse cheaply and privately (audit A1):
a picture whose side the engine refuses is refused before anything is queued, and /info and
the Info menu read a PNG's text on the upload's thread (never Pillow on the event loop),
refusing a PNG of too many chunks."""

from __future__ import annotations

import pytest
from PIL import Image

from bot.app import EaselBot
from bot.image_segments import MAX_PNG_OTHER_CHUNKS
from bot.images import MAX_UPLOAD_BYTES
from inference.images import MAX_INPUT_SIDE, MIN_INPUT_SIDE
from inference.infotext import png_with_infotext
from tests.e2e.helpers import StartEasel
from tests.fake_discord import FakeDiscord
from tests.support.chunky_files import chunky_png, pillow_opens_on_the_loop, plain_png

INFOTEXT = "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 16x16"


def picture() -> bytes:
    return png_with_infotext(Image.new("RGB", (16, 16), "red"), INFOTEXT)


async def jobs_of(bot: EaselBot, fake: FakeDiscord) -> int:
    return (await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)).total


async def test_a_picture_the_engine_refuses_is_refused_privately_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        for command, options, size in (
            ("upscale", {"scale": 2}, (4, 4)),
            ("vary", {"prompt": "a fox"}, (8192, 2048)),
        ):
            handle = await fake_discord.invoke_command(
                command, options, attachments={"image": ("odd.png", plain_png(size))}
            )
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral, reply.content
            assert f"{size[0]}x{size[1]} pixels" in reply.content
            assert f"between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE} pixels" in reply.content
        assert await jobs_of(bot, fake_discord) == 0


async def test_info_reads_on_the_uploads_thread_and_refuses_a_chunky_png(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_easel():
        posted = await fake_discord.post_user_message("look", attachments=[("a.png", picture())])
        with pillow_opens_on_the_loop(monkeypatch) as on_the_loop:
            command = await fake_discord.invoke_command(
                "info", attachments={"image": ("a.png", picture())}
            )
            assert "**Prompt:** a cat" in (await command.wait_for_answer()).content
            menu = await fake_discord.invoke_message_command("Info", posted)
            assert "**Steps:** 3" in (await menu.wait_for_answer()).content
            chunky = await fake_discord.invoke_command(
                "info", attachments={"image": ("chunky.png", chunky_png(MAX_UPLOAD_BYTES // 13))}
            )
            refusal = await chunky.wait_for_answer()
        assert refusal.is_ephemeral
        assert f"more than {MAX_PNG_OTHER_CHUNKS:,} chunks" in refusal.content
        assert on_the_loop == []
