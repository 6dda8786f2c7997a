"""EASEL_MAX_STEPS and EASEL_MAX_PIXELS: refused before anything is queued, with the ceiling
named; what fits renders as usual."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.fake_discord import FakeDiscord


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> Settings:
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir)
    return settings.model_copy(update={"max_steps": 10, "max_pixels": 64 * 64})


async def test_requests_over_the_server_limits_are_refused_privately(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        for options, expected in [
            ({"steps": 20}, "this server renders at most 10 steps, got 20"),
            (
                {"size": "128x64", "steps": 3},
                "at most 4,096 pixels a picture (about 64x64); 128x64 is 8,192",
            ),
        ]:
            handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **options})
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral and expected in reply.content, reply.content
        assert bot.queue.queued_count() == 0
        assert (
            await bot.services.history.page(fake_discord.user_id, 0, guild_id=fake_discord.guild_id)
        ).total == 0
        # No steps given: the server's ceiling (10) instead of the usual 20.
        fits = await fake_discord.invoke_command("imagine", {"prompt": "a cat"})
        result = await fits.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and parse_infotext(infotext)[2]["Steps"] == 10
