"""VAE overrides by family: an SD3/Flux model decodes 16 latent channels and an SD model 4,
so each takes only a VAE of its kind (read from the file's header) and the other kind is
refused in one sentence naming the ones that fit; an SD3 model renders with a 16-channel
VAE override as SD models do with theirs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from inference.engine import Engine
from inference.flow_tiny import build_tiny_flow_pipeline
from inference.infotext import parse_infotext
from inference.ldm_export import vae_to_ldm
from inference.metadata import latent_channels_of, vae_latent_channels
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_model, write_tiny_vae
from inference.types import RenderInputError, RenderRequest


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny ``sd`` (SD1.5) and ``sd3``; in ``vae/``, ``sd-vae`` (4 channels) and ``sd3-ae``
    (16, as Flux's ae.safetensors: other weights than the model's own)."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / "sd", family="sd15")
    write_tiny_model(directory / "sd3", family="sd3")
    write_tiny_vae(directory / "vae" / "sd-vae.safetensors")
    vae = build_tiny_flow_pipeline("sd3", seed=1).vae
    save_file(
        vae_to_ldm(vae.state_dict(), vae.config), str(directory / "vae" / "sd3-ae.safetensors")
    )
    return directory


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(models, preview_interval_s=0)


def render(engine: Engine, model: str, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    request = RenderRequest(
        model=model,
        prompt="a red cat",
        seed=3,
        steps=2,
        sampler="Euler",
        width=64,
        height=64,
        options=options,
    )
    (image,) = engine.render(request)
    pixels = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(np.int16)
    return pixels, parse_infotext(image.infotext)[2]


def test_the_header_tells_the_latent_channels(models: Path) -> None:
    assert vae_latent_channels(models / "vae" / "sd-vae.safetensors") == 4
    assert vae_latent_channels(models / "vae" / "sd3-ae.safetensors") == 16
    # What the engine compares them with before loading: the model's family, from its files.
    entries = ModelRegistry(models).scan()
    assert (latent_channels_of(entries["sd"]), latent_channels_of(entries["sd3"])) == (4, 16)


@pytest.mark.parametrize(
    ("model", "vae", "refusal"),
    [
        (
            "sd3",
            "sd-vae",
            "VAE sd-vae.safetensors is for SD 1.x, 2.x and SDXL models and this model takes a "
            "16-channel VAE (SD3 and Flux); choose one of those, or none for the model's own",
        ),
        (
            "sd",
            "sd3-ae",
            "VAE sd3-ae.safetensors is for SD3 and Flux models and this model takes a "
            "4-channel VAE (SD 1.x, 2.x and SDXL); choose one of those, or none for the model's "
            "own",
        ),
    ],
)
def test_a_vae_of_the_other_family_is_refused_before_the_model_loads(
    engine: Engine, model: str, vae: str, refusal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    monkeypatch.setattr(engine.models, "load", loads.append)
    with pytest.raises(RenderInputError) as refused:
        render(engine, model, vae=vae)
    assert str(refused.value) == refusal
    with pytest.raises(RenderInputError) as refused_in_a_batch:
        engine.render_batch([RenderRequest("a cat", model=model, options={"vae": vae})])
    assert str(refused_in_a_batch.value) == refusal
    assert loads == []  # both files' headers told: no model was read for a refusal


def test_an_sd3_model_renders_with_a_16_channel_vae_override(engine: Engine, models: Path) -> None:
    plain, _ = render(engine, "sd3")
    overridden, params = render(engine, "sd3", vae="sd3-ae")
    assert np.abs(overridden - plain).max() > 10
    assert params["VAE"] == "sd3-ae.safetensors" and len(params["VAE hash"]) == 10
    after, after_params = render(engine, "sd3")
    assert np.array_equal(after, plain) and "VAE" not in after_params
