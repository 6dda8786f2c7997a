"""Closing the bot (its composition root, bot/app.py) closes the prompt planner too: its
threads take no more work and a plan still read stops, so nothing of a member's prompt is
read after the bot has gone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.app import build
from bot.policy.prompt_safety import CLOSED
from bot.user_errors import UserError
from inference.types import RenderRequest
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine


async def test_closing_the_bot_closes_its_prompt_planner(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    bot = build(settings, lambda _device: InstantEngine())
    try:
        await bot.login(fake_discord.token)  # runs setup_hook: the planner warms up
        planner = bot.services.prompts
        cat = RenderRequest("a cat", seed=1, steps=2)
        checked = await planner.check(cat, (), guild_id=None)
        # It plans: the same request, with what planning adds in its options.
        assert dataclasses.replace(checked, options={}) == cat and checked.options
    finally:
        await bot.close()
    with pytest.raises(UserError) as refused:
        await planner.check(cat, (), guild_id=None)
    assert str(refused.value) == CLOSED
    with pytest.raises(RuntimeError, match="after shutdown"):
        planner._threads.submit(print)
