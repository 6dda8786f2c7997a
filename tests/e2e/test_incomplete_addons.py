"""A LoRA still being copied into ``models/lora/`` (scp, rsync, a browser download), through
the fake Discord: /loras and the lora autocomplete leave it out, a typed ``<lora:...>`` tag
naming it is refused up front as not installed, nothing queued or charged (it used to be
queued, charged, failed with "Something went wrong on Easel's side" and refunded), the
operator is told once, and it is offered and applied as soon as its copy ends."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import build
from inference.infotext import infotext_from_png
from inference.tiny import write_tiny_lora
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, images_today, imagine, reply_to
from tests.e2e.test_lists import lines_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


async def test_a_half_copied_lora_is_refused_free_until_its_copy_ends(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_lora(models / "lora" / "ready.safetensors")
    copying = write_tiny_lora(models / "lora" / "copying.safetensors", seed=1)
    whole = copying.read_bytes()
    copying.write_bytes(whole[: len(whole) // 2])
    bot = build(easel_settings(fake, tmp_path / "data", models))
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        async with running_bot(fake, bot):
            listed = [line.split(" — ")[0] for line in lines_of(await reply_to(fake, "loras"))]
            assert listed == ["`<lora:ready:0.8>`"]
            choices = await fake.autocomplete("imagine", {"prompt": "a", "lora": ""}, "lora")
            assert [choice["value"] for choice in choices] == ["ready"]
            for _ in range(2):
                refused = await reply_to(
                    fake, "imagine", {"prompt": "a cat <lora:copying:0.8>", **QUICK}
                )
                assert refused.is_ephemeral and refused.content == (
                    "The LoRA `copying` is not installed or not allowed here. You may use: ready."
                ), refused.content
            assert bot.queue.queued_count() == 0
            assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0

            copying.write_bytes(whole)  # the copy ends: no restart
            result = await imagine(fake, "a cat <lora:copying:0.8>", seed=3)
            infotext = infotext_from_png(result.attachments[0].data)
            assert infotext is not None and "Prompt warnings" not in infotext  # applied
            assert "copying" in infotext.splitlines()[-1]  # its hash is recorded
            assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
    told = [message for message in caplog.messages if "is not offered" in message]
    assert told == [
        f"lora copying at {copying} is not offered: copying.safetensors is incomplete "
        f"({len(whole) // 2} of {len(whole)} bytes): still copying?"
    ]
