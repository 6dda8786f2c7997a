"""A model's family is what its tensors say, as the engine loads it, not its file's metadata:
an SD 1.5 file whose stale metadata (a merge's kohya or modelspec field) names SD 3 or Flux is
an SD model wherever a picture of it is rendered again. /vary keeps the picture's clip skip and
its SD VAE, with no "flow matching" note, and renders. Through the fake Discord with tiny
models. So do the rules read before a render: the steps, CFG and sampler a model's family
gives a request naming none, and whether an image prompt (--sref) may guide it."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from bot.requests import Defaults
from bot.settings import Settings
from inference.tiny import (
    write_tiny_checkpoint,
    write_tiny_ip_adapter,
    write_tiny_model,
    write_tiny_vae,
)
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel
from tests.e2e.test_combined_edits import answered, crafted_picture
from tests.e2e.test_family_refusals_of_edits import picture_params, uploaded_to
from tests.e2e.test_image_prompts import image_prompt_params, picture_png
from tests.fake_discord import FakeDiscord
from tests.support.pictures import has_picture

# What a stale field may say of an SD 1.5 file: kohya's base model, a modelspec architecture.
STALE_METADATA = {
    "says-sd3": {"modelspec.architecture": "stable-diffusion-v3-medium"},
    "says-flux": {"ss_base_model_version": "flux1"},
}


@pytest.fixture(scope="module")
def stale_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD 1.5 checkpoints whose metadata names a flow-matching family, an SD VAE, and an
    SD 1.5 IP-Adapter (written beside a tiny SD 1.5 folder, ``sd``, which it is made for)."""
    directory = tmp_path_factory.mktemp("stale-metadata-models")
    for name, metadata in STALE_METADATA.items():
        path = write_tiny_checkpoint(directory / "Stable-diffusion" / f"{name}.safetensors")
        save_file(load_file(path), path, metadata=metadata)
    write_tiny_vae(directory / "vae" / "sd-vae.safetensors")
    write_tiny_ip_adapter(write_tiny_model(directory / "sd", family="sd15"))
    return directory


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, stale_models_dir: Path
) -> Settings:
    return easel_settings(fake_discord, tmp_path / "data", stale_models_dir)


async def test_an_sd_file_whose_metadata_names_a_flow_family_keeps_its_clip_skip_and_vae(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/vary of a picture of each such file, whose text says "Clip skip: 2" and an SD VAE:
    rendered on its model with both, no note leaving them out nor a refusal of the VAE (the
    metadata once made the bot drop the clip skip, "the picture's model (flow matching)
    takes none", and refuse the VAE as of the wrong family)."""
    async with start_easel():
        for model in STALE_METADATA:
            crafted = crafted_picture(f"Model: {model}, Clip skip: 2, VAE: sd-vae.safetensors")
            varied = await uploaded_to(fake_discord, "vary", crafted)
            assert has_picture(varied), (model, varied.summary())
            assert "left out" not in varied.content, (model, varied.content)
            params = picture_params(varied)
            assert params["Model"] == model and params["Clip skip"] == 2, (model, params)
            assert params["VAE"] == "sd-vae.safetensors", (model, params)


async def test_an_sd_file_whose_metadata_names_a_flow_family_gets_the_servers_defaults_and_an_sref(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/imagine naming each such file and no steps nor sampler renders with this server's
    defaults, not the flow family's its metadata names (SD 3's 28 steps and Euler); and
    with ``--sref`` it renders guided by the SD 1.5 IP-Adapter, where the metadata had it
    refused ("IP-Adapter (--sref, /blend) does not work with SD 3 models here")."""
    style = await fake_discord.post_user_message(
        "my style", attachments=[("s.png", picture_png("blue"))]
    )
    defaults = Defaults()
    async with start_easel():
        for model in STALE_METADATA:
            for prompt in ("a cat", f"a cat --sref {style.jump_url}"):
                handle = await fake_discord.invoke_command(
                    "imagine", {"prompt": prompt, "model": model, "size": "64x64"}
                )
                result = await handle.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)
                assert has_picture(result), (model, prompt, result.summary())
                params = picture_params(result)
                assert params["Model"] == model, (model, params)
                assert params["Steps"] == defaults.steps, (model, params)
                assert params["Sampler"] == defaults.sampler, (model, params)
                if "--sref" in prompt:
                    adapter = str(image_prompt_params(result)["IP-Adapter"])
                    assert adapter.startswith("sd-ipadapter ["), (model, adapter)
