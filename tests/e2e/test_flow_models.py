"""A Flux model through the fake Discord: /imagine's model autocomplete shows each model's
family (refiners left out), a tiny Flux dev render comes back through the queue with the
web UI fork's "Distilled CFG Scale" (Flux dev's own steps and guidance when the member chose
none), and what Flux cannot do is one sentence to the member."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, imagine
from tests.fake_discord import FakeDiscord


@pytest.fixture
def easel_settings_for_test(fake_discord: FakeDiscord, tmp_path: Path) -> Settings:
    """Tiny models ``my-flux`` (Flux dev) and ``sd`` (SD1.5), and a tiny refiner file."""
    models = tmp_path / "models"
    write_tiny_model(models / "my-flux", family="flux")
    write_tiny_model(models / "sd", family="sd15")
    write_tiny_checkpoint(
        models / "Stable-diffusion" / "refiner.safetensors", family="sdxl-refiner"
    )
    return easel_settings(fake_discord, tmp_path / "data", models, tmp_path / "wildcards")


async def test_imagine_with_a_flux_model(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        choices = await fake_discord.autocomplete("imagine", {"prompt": "a", "model": ""}, "model")
        assert choices == [
            {"name": "my-flux (Flux dev)", "value": "my-flux"},
            {"name": "sd (SD 1.5)", "value": "sd"},
        ]

        result = await imagine(fake_discord, "a (red:1.2) cat", model="my-flux", cfg=3.5, seed=5)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert params["Model"] == "my-flux" and params["Distilled CFG Scale"] == 3.5
        assert params["Sampler"] == "Euler"  # the default Euler a has no flow-matching form
        assert "takes no weights" in str(params["Prompt warnings"])
        # ...and the member reads it under the picture.
        assert "\nNote: Flux dev reads prompts with T5, which takes no weights" in result.content

        # Nothing chosen: Flux dev's own defaults, not the server's 20 steps, CFG 7, Euler a.
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "size": QUICK["size"], "model": "my-flux", "seed": 5}
        )
        plain = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(plain.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert (params["Steps"], params["Distilled CFG Scale"], params["Sampler"]) == (
            28,
            3.5,
            "Euler",
        )
        assert "Euler a" not in plain.content

        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat AND a dog", **QUICK, "model": "my-flux"}
        )
        refused = await handle.wait_for_original(
            lambda m: "does not work" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert "AND (composable prompts) does not work with Flux dev models here" in (
            refused.content
        )
