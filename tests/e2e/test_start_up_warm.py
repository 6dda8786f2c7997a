"""What a fresh process's first burst of commands used to pay for is paid at start, before the
bot connects to the gateway (issue 12, docs/performance.md "The first burst")."""

from __future__ import annotations

import gc
from pathlib import Path

from bot.app import build
from inference.prompts import default_tokenizer
from inference.worker import RenderEngine
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine


def instant_engine(_device: str) -> RenderEngine:
    return InstantEngine()


async def test_the_prompt_planner_and_the_heap_are_ready_before_the_gateway_connects(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    default_tokenizer.cache_clear()
    # No model is rendered: an empty models folder will do.
    bot = build(
        easel_settings(fake_discord, tmp_path / "data", tmp_path / "models"), instant_engine
    )
    try:
        # discord.py runs setup_hook in login, before any gateway connection (so before READY).
        await bot.login(fake_discord.token)
        assert not bot.is_ready()
        # The first plan read the CLIP vocabulary; six threads of a burst once read it at once.
        assert default_tokenizer.cache_info().currsize == 1
        # What starting left is out of later collections (else the first full one falls in
        # the first burst).
        assert gc.get_freeze_count() > 0
    finally:
        await bot.close()
