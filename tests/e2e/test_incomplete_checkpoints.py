"""A checkpoint still being copied, or no safetensors file at all, through the fake Discord:
/models and the model autocomplete leave it out (every job that picked it failed with a
traceback), /imagine refuses it by name, the operator is told once, and it is offered as soon
as its copy ends."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from bot.app import build
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.registry import SCAN_MAX_AGE_NS
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, images_today, reply_to
from tests.e2e.test_lists import lines_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


async def test_a_checkpoint_is_offered_only_once_it_is_whole(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    (models / "garbage.safetensors").write_bytes(bytes(range(256)) * 64)
    # A diffusers folder whose UNet is half copied.
    shutil.copytree(tiny_models_dir / "tiny", models / "copying")
    unet = models / "copying" / "unet" / "diffusion_pytorch_model.safetensors"
    whole = unet.read_bytes()
    unet.write_bytes(whole[: len(whole) // 2])
    # The models folder dated a minute back, as a slow start under load leaves it: settled,
    # so a scan of it is kept (``SCAN_MAX_AGE_NS``) past the copy's end below.
    long_ago = time.time_ns() - 60_000_000_000
    os.utime(models, ns=(long_ago, long_ago))
    settings = easel_settings(fake, tmp_path / "data", models)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        async with running_bot(fake, build(settings)):
            await only_tiny_is_offered_and_refused(fake, "copying", models)
            unet.write_bytes(whole)
            await offered_within_seconds(fake, ["`copying` — SD 1.5", "`tiny` — SD 1.5"])
    told = [message for message in caplog.messages if "is not offered" in message]
    assert sorted(told) == [
        "model copying is not offered: unet/diffusion_pytorch_model.safetensors is incomplete "
        f"({len(whole) // 2} of {len(whole)} bytes): still copying?",
        "model garbage is not offered: garbage.safetensors announces a 506097522914230528-byte "
        "header, over the limit",
    ]


async def test_a_split_release_is_offered_only_once_its_t5_is_whole(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transformer alone in ``models/unet/`` whose T5 file in ``models/text_encoder/`` is
    still being copied: every job naming it failed at load (refunded). It is left out of
    /models and the autocomplete, refused by name before anything is queued or charged, and
    offered once the copy ends (in place: no folder changes)."""
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_flow_checkpoint(models / "unet" / "split.safetensors", parts_dir=models)
    t5 = models / "text_encoder" / "tiny-t5xxl.safetensors"
    whole = t5.read_bytes()
    t5.write_bytes(whole[: len(whole) // 2])
    bot = build(easel_settings(fake, tmp_path / "data", models))
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        async with running_bot(fake, bot):
            await only_tiny_is_offered_and_refused(fake, "split", models)
            assert bot.queue.queued_count() == 0
            assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
            t5.write_bytes(whole)  # the copy ends, in place
            await offered_within_seconds(fake, ["`split` — SD 3", "`tiny` — SD 1.5"])
    told = [message for message in caplog.messages if "is not offered" in message]
    assert told == [
        "model split is not offered: text_encoder/tiny-t5xxl.safetensors is incomplete "
        f"({len(whole) // 2} of {len(whole)} bytes): still copying?"
    ]


async def only_tiny_is_offered_and_refused(fake: FakeDiscord, name: str, models: Path) -> None:
    """/models and the model autocomplete offer ``tiny`` alone, and /imagine naming ``name``
    is refused up front, to the member alone, naming no server path."""
    for _ in range(2):
        assert lines_of(await reply_to(fake, "models")) == ["`tiny` — SD 1.5"]
        choices = await fake.autocomplete(
            "imagine", {"prompt": "a cat", "model": ""}, focused="model"
        )
        assert [choice["value"] for choice in choices] == ["tiny"]
    refused = await reply_to(fake, "imagine", {"prompt": "a cat", "model": name, **QUICK})
    assert refused.is_ephemeral and name in refused.content, refused.content
    assert "Traceback" not in refused.content and str(models) not in refused.content


async def offered_within_seconds(fake: FakeDiscord, offered: list[str]) -> None:
    """/models lists ``offered`` soon: a file written in place changes no folder, so a kept
    scan may answer for up to SCAN_MAX_AGE_NS more (1 s). Three of those leaves two for a
    loaded machine, and stays under LISTING_MAX_AGE_NS (10 s): a change that trusted the kept
    listing that long instead fails here."""
    async with asyncio.timeout(3 * SCAN_MAX_AGE_NS / 1e9):
        while lines_of(await reply_to(fake, "models")) != offered:  # noqa: ASYNC110 (polled)
            await asyncio.sleep(0.05)
