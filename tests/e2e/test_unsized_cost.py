"""A request naming no size renders at its model's native size (1024x1024 for SDXL), and its
quota reservation counts that size: a member near a GPU-seconds limit is not admitted at the
cost of a 512x512 picture, a quarter of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference.ldm_export import UNET_PREFIX
from inference.metadata import FAMILY_MARKERS
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord

SDXL_MARKER = dict(FAMILY_MARKERS)["sdxl-base"]
# 20 steps: 1.6 s estimated at 512x512, 6.4 s at SDXL's 1024x1024.
GPU_SECONDS_A_DAY = 4.0


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """The tiny SD1.5 model, and an SDXL checkpoint's header (``xl``: never rendered)."""
    directory = tmp_path_factory.mktemp("models")
    (directory / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    save_file(
        {
            SDXL_MARKER: torch.zeros(4),
            f"{UNET_PREFIX}input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        },
        directory / "xl.safetensors",
    )
    return directory


async def test_an_unsized_sdxl_request_reserves_its_native_size(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        limit = {
            "scope": "user",
            "member": fake_discord.user_id,
            "gpu_seconds_per_day": GPU_SECONDS_A_DAY,
        }
        await reply_to(fake_discord, "easel-admin quota", limit, user=fake_discord.owner_id)
        asked = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "model": "xl", "steps": 20}
        )
        refusal = await asked.wait_for_original(lambda m: not m.is_loading)
        assert "⛔" in refusal.content and "GPU" in refusal.content, refusal.content
        assert bot.queue.queued_count() == 0
        # The tiny model's own native size (64x64) costs next to nothing: admitted.
        tiny = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "model": "tiny", "steps": 20}
        )
        await tiny.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
