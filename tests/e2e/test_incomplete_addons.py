"""A LoRA still being copied into ``models/lora/`` (scp, rsync, a browser download), through
the fake Discord: /loras and the lora autocomplete leave it out, a typed ``<lora:...>`` tag
naming it is refused up front as not installed, nothing queued or charged (it used to be
queued, charged, failed with "Something went wrong on Easel's side" and refunded), the
operator is told once, and it is offered and applied as soon as its copy ends. A ControlNet
still being copied is refused as not installed too, when /imagine's control picture asks for
one. One not installed at all is refused saying so and to ask an admin, never naming the
server's folders (the operator's log does)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from bot.app import build
from inference.infotext import infotext_from_png
from inference.tiny import write_tiny_lora
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    has_picture,
    images_today,
    imagine,
    reply_to,
)
from tests.e2e.test_controlnet import edges_png
from tests.e2e.test_image_prompts import picture_png
from tests.e2e.test_lists import lines_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


@pytest.fixture
def models(tmp_path: Path, tiny_models_dir: Path) -> Path:
    """A models folder of its own, holding the tiny model."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    return folder


async def test_a_half_copied_lora_is_refused_free_until_its_copy_ends(
    fake_discord: FakeDiscord, tmp_path: Path, models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_discord
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


async def test_a_half_copied_controlnet_is_refused_free_until_its_copy_ends(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    models: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It used to be offered: the job was queued and charged, failed loading it (an internal
    error), refunded."""
    fake = fake_discord
    installed = tiny_models_dir / "ControlNet"
    shutil.copytree(
        installed / "tiny-controlnet.config", models / "ControlNet" / "tiny-controlnet.config"
    )
    copying = models / "ControlNet" / "tiny-controlnet.safetensors"
    whole = (installed / copying.name).read_bytes()
    copying.write_bytes(whole[: len(whole) // 2])
    asked = {"prompt": "a cat", **QUICK, "control_type": "canny"}
    control = {"control": ("edges.png", edges_png())}
    bot = build(easel_settings(fake, tmp_path / "data", models))
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        async with running_bot(fake, bot):
            for _ in range(2):
                handle = await fake.invoke_command("imagine", asked, attachments=control)
                refused = await handle.wait_for_answer()
                assert refused.is_ephemeral and refused.content == (
                    "ControlNet is not installed on this server: ask an admin."
                ), refused.content
            assert bot.queue.queued_count() == 0
            assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0

            copying.write_bytes(whole)  # the copy ends: no restart
            handle = await fake.invoke_command("imagine", asked, attachments=control)
            result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            infotext = infotext_from_png(result.attachments[0].data)
            assert infotext is not None and "Model: tiny-controlnet [" in infotext
            assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
    told = [message for message in caplog.messages if "is not offered" in message]
    assert told == [
        f"ControlNet tiny-controlnet at {copying} is not offered: tiny-controlnet.safetensors "
        f"is incomplete ({len(whole) // 2} of {len(whole)} bytes): still copying?"
    ]


async def test_a_missing_controlnet_or_ip_adapter_is_refused_without_the_servers_path(
    fake_discord: FakeDiscord, tmp_path: Path, models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/imagine's control picture (no ControlNet), its style reference and /blend (no
    IP-Adapter) are refused up front, never naming the server's folders; nothing is queued;
    the log tells the operator where each goes, once."""
    fake = fake_discord
    pictures = {f"image{n}": (f"p{n}.png", picture_png(c)) for n, c in ((1, "red"), (2, "green"))}
    asks = [
        (
            "imagine",
            {"prompt": "a cat", **QUICK, "control_type": "canny"},
            {"control": ("edges.png", edges_png())},
            "ControlNet is not installed on this server: ask an admin.",
        ),
        (
            "imagine",
            {"prompt": "a cat", **QUICK},
            {"sref": pictures["image1"]},
            "IP-Adapter is not installed on this server: ask an admin.",
        ),
        (
            "blend",
            {"prompt": "--steps 2"},
            pictures,
            "IP-Adapter is not installed on this server: ask an admin.",
        ),
    ]
    bot = build(easel_settings(fake, tmp_path / "data", models))
    with caplog.at_level(logging.WARNING, logger="inference.not_installed"):
        async with running_bot(fake, bot):
            for _ in range(2):
                for command, options, files, expected in asks:
                    handle = await fake.invoke_command(command, options, attachments=files)
                    refused = await handle.wait_for_answer()
                    assert refused.is_ephemeral and refused.content == expected, refused.content
                    assert str(tmp_path) not in refused.content and "/" not in refused.content
            assert bot.queue.queued_count() == 0
    told = [record.getMessage() for record in caplog.records if "not installed" in record.msg]
    assert told == [
        f"ControlNet is not installed: put a ControlNet in {models / 'ControlNet'} as a "
        ".safetensors file or a diffusers folder",
        f"IP-Adapter is not installed: put an IP-Adapter .safetensors file in "
        f"{models / 'ipadapter'}/ and its CLIP image encoder (a transformers folder) in "
        f"{models / 'ipadapter' / 'image_encoder'}/",
    ]
