"""/imagine with an SDXL refiner through the fake Discord: the refiner option autocompletes
the installed refiners only, a refined tiny SDXL render comes back through the queue with the
web UI's refiner fields, and bad refiner inputs are one ephemeral sentence, nothing queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cogs.imagine
from bot.settings import Settings
from db.guild_settings import GuildList
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord


@pytest.fixture
def easel_settings_for_test(fake_discord: FakeDiscord, tmp_path: Path) -> Settings:
    """A models folder with a tiny SDXL model ``xl`` and a tiny refiner file ``refiner``."""
    models = tmp_path / "models"
    write_tiny_model(models / "xl", family="sdxl")
    write_tiny_checkpoint(
        models / "Stable-diffusion" / "refiner.safetensors", family="sdxl-refiner", seed=3
    )
    return easel_settings(fake_discord, tmp_path / "data", models, tmp_path / "wildcards")


async def test_imagine_with_a_refiner(fake_discord: FakeDiscord, start_easel: StartEasel) -> None:
    quick = {"prompt": "a cat", **QUICK, "steps": 4, "model": "xl"}
    async with start_easel() as bot:
        choices = await fake_discord.autocomplete("imagine", {**quick, "refiner": ""}, "refiner")
        assert [choice["value"] for choice in choices] == ["refiner"]

        for options, expected in [
            ({"refiner_switch": 0.5}, "Refiner switch needs a refiner model"),
            ({"refiner": "refiner", "hires": True}, "A refiner and the hires fix do not combine"),
            # Refused before it is acknowledged, naming those there are, not at render.
            (
                {"refiner": "nope"},
                "The refiner `nope` is not installed or not allowed here. You may use: refiner.",
            ),
        ]:
            handle = await fake_discord.invoke_command("imagine", {**quick, **options})
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral and expected in reply.content, reply.content
            assert "\n" not in reply.content
        assert bot.queue.queued_count() == 0

        handle = await fake_discord.invoke_command(
            "imagine", {**quick, "refiner": "refiner", "refiner_switch": 0.5}
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert str(params["Refiner"]).startswith("refiner [")
        assert params["Refiner switch at"] == 0.5

        # Once the server allows only ``xl``, the refiner is not offered (a refiner is a model).
        await reply_to(
            fake_discord,
            "easel-admin model",
            {"action": "add", "name": "xl"},
            user=fake_discord.owner_id,
        )
        choices = await fake_discord.autocomplete("imagine", {**quick, "refiner": ""}, "refiner")
        assert choices == []


async def test_a_refiner_allowed_while_the_command_is_read_is_taken(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refiner check agrees with admission: it reads the server's list as it is then,
    not as it was when the member's options were read."""
    quick = {"prompt": "a cat", **QUICK, "steps": 4, "model": "xl"}
    async with start_easel() as bot:
        policy = bot.services.guild_policy
        guild, owner = fake_discord.guild_id, fake_discord.owner_id
        await policy.change_list(guild, owner, GuildList.ALLOWED_MODEL, "xl", add=True)
        check_refiner_here = cogs.imagine.check_refiner_here

        async def allowed_just_before(*args: Any) -> None:
            await policy.change_list(guild, owner, GuildList.ALLOWED_MODEL, "refiner", add=True)
            await check_refiner_here(*args)

        monkeypatch.setattr(cogs.imagine, "check_refiner_here", allowed_just_before)
        handle = await fake_discord.invoke_command(
            "imagine", {**quick, "refiner": "refiner", "refiner_switch": 0.5}
        )
        result = await handle.wait_for_original(
            lambda m: not m.is_loading and (has_picture(m) or m.is_ephemeral),
            timeout=RENDER_TIMEOUT_S,
        )
        assert has_picture(result), result.content
