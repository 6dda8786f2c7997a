"""/use-settings refuses a VAE of the other family than the model's (a 16-channel SD3/Flux VAE
on an SD model) when the settings are read, with the render's own sentence: nothing is queued
or charged, where it used to be queued, charged, failed and refunded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bot.jobs.accounting import Member
from bot.policy.quota import Period
from inference.engine import Engine
from inference.types import RenderInputError, RenderRequest
from tests.e2e.helpers import StartEasel, reply_to
from tests.fake_discord import FakeDiscord

FLUX_VAE = "flux-ae.safetensors"


@pytest.fixture(scope="module")
def tiny_models_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD1.5 model and, in ``vae/``, a VAE whose header says it decodes 16 latent
    channels (all the refusal reads; its weights are never loaded)."""
    directory = tmp_path_factory.mktemp("models-with-a-flux-vae")
    (directory / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    (directory / "vae").mkdir()
    save_file({"decoder.conv_in.weight": torch.zeros(8, 16, 3, 3)}, directory / "vae" / FLUX_VAE)
    return directory


def render_refusal(models_dir: Path) -> str:
    request = RenderRequest("a cat", model="tiny", width=64, height=64, options={"vae": "flux-ae"})
    with pytest.raises(RenderInputError) as refused:
        Engine(models_dir, device="cpu").render(request)
    return str(refused.value)


async def test_a_vae_of_the_other_family_is_refused_with_the_render_s_sentence(
    fake_discord: FakeDiscord, start_easel: StartEasel, tiny_models_dir: Path
) -> None:
    sentence = render_refusal(tiny_models_dir)
    assert sentence.startswith(f"VAE {FLUX_VAE} is for SD3 and Flux models")
    settings = (
        f"a cat\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny, VAE: {FLUX_VAE}"
    )
    async with start_easel() as bot:
        reply = await reply_to(fake_discord, "use-settings", {"infotext": settings})
        assert reply.is_ephemeral and sentence in reply.content, reply.content
        assert bot.queue.queued_count() == 0
        report = await bot.services.quota_status.report(
            Member(fake_discord.user_id, fake_discord.guild_id)
        )
        assert next(p.images for p in report.periods if p.period is Period.DAY) == 0
