"""EASEL_WARM_START through the bot's composition: with ``on`` each device's engine is built
and warmed when the queue starts, before the gateway connects; ``auto`` leaves a CPU lazy."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.app import build
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine


@dataclass
class WarmingEngine(InstantEngine):
    warmed: threading.Event = field(default_factory=threading.Event)

    def warm_up(self) -> None:
        self.warmed.set()


@pytest.mark.parametrize(("setting", "warms"), [("on", True), ("auto", False)])
async def test_the_bot_warms_its_cpu_device_at_start_only_when_asked(
    fake_discord: FakeDiscord, tmp_path: Path, setting: str, warms: bool
) -> None:
    engine = WarmingEngine()
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    bot = build(settings.model_copy(update={"warm_start": setting}), lambda _device: engine)
    try:
        await bot.login(fake_discord.token)  # runs setup_hook: the queue starts
        assert not bot.is_ready()
    finally:
        await bot.close()  # waits for the device thread, and so for a warm-up submitted
    assert engine.warmed.is_set() is warms
