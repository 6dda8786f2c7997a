"""EASEL_WARM_START through the bot's composition: with ``on`` each device's engine is built
and warmed when the queue starts, before the gateway connects; ``auto`` leaves a CPU lazy."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.app import build
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine


@dataclass
class WarmingEngine(InstantEngine):
    # What ran on the device thread, in order: warm-ups and renders.
    ran: list[str] = field(default_factory=list)

    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None:
        self.ran.append("warm-up")

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        self.ran.append(f"render {request.prompt!r}")
        return super().render(request, progress, cancel)


@pytest.mark.parametrize(("setting", "ran"), [("on", ["warm-up"]), ("auto", [])])
async def test_the_bot_warms_its_cpu_device_at_start_only_when_asked(
    fake_discord: FakeDiscord, tmp_path: Path, setting: str, ran: list[str]
) -> None:
    engine = WarmingEngine()
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    bot = build(settings.model_copy(update={"warm_start": setting}), lambda _device: engine)
    try:
        await bot.login(fake_discord.token)  # runs setup_hook: the queue starts
        assert not bot.is_ready()
        # The device thread runs its work in order: once this probe has rendered, a warm-up
        # submitted at the start has run too (none can still be queued for close() to drop).
        [slot] = bot.queue.slots
        await slot.render(RenderRequest("probe", steps=1))
    finally:
        await bot.close()
    assert engine.ran == [*ran, "render 'probe'"]
