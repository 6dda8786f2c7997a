"""IP-Adapter image prompts through the real engine with tiny random models: the adapter
changes the picture, strength 0 is the plain render, style-only reaches only SDXL's style
layers, every row of the guidance (CFG, AND) gets its image tokens so a picture renders the
same alone or in a batch, the UNet gets its own attention back, and bad inputs are refused
with one sentence."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.engine import Engine
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_ip_adapter, write_tiny_model
from inference.types import RenderedImage, RenderInputError, RenderRequest
from tests.support.checkpoint_files import stand_in_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (SD1.5) and ``tiny-xl`` (SDXL), each with its tiny IP-Adapter."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_ip_adapter(write_tiny_model(directory / "tiny"))
    write_tiny_ip_adapter(write_tiny_model(directory / "tiny-xl", family="sdxl"))
    return directory


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(models)


def _picture(path: Path, colour: str, shape: str) -> str:
    picture = Image.new("RGB", (48, 64), colour)
    ImageDraw.Draw(picture).ellipse((8, 8, 40, 56), fill=shape)
    picture.save(path)
    return str(path)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pictures")
    return (
        _picture(folder / "red.png", "red", "blue"),
        _picture(folder / "green.png", "green", "yellow"),
    )


def request(model: str = "tiny", **changes: Any) -> RenderRequest:
    fields: dict[str, Any] = {"seed": 5, "steps": 3, "width": 64, "height": 64, "model": model}
    # A sampler without step noise, so diffusers' own pipeline can render the same picture.
    fields["sampler"] = "Euler"
    return RenderRequest("a cat", **{**fields, **changes})


def guided(images: list[str], checkpoint: str = "tiny", **prompt: Any) -> RenderRequest:
    """A request with an image prompt (``prompt``: its other fields, ``model`` the adapter)."""
    return request(checkpoint, options={"ipadapter": {"images": images, **prompt}})


def pixels(image: RenderedImage) -> np.ndarray:
    with Image.open(io.BytesIO(image.png)) as picture:
        return np.asarray(picture, dtype=np.int16)


# Renders are deterministic: one asked for again (the plain picture...) is not re-run.
_rendered: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}


def render(engine: Engine, asked: RenderRequest) -> tuple[np.ndarray, dict[str, Any]]:
    key = asked.to_json()
    if key not in _rendered:
        [image] = engine.render(asked)
        infotext = infotext_from_png(image.png)
        assert infotext is not None
        _rendered[key] = pixels(image), parse_infotext(infotext)[2]
    return _rendered[key]


def test_the_adapter_changes_the_picture_and_strength_zero_does_not(
    engine: Engine, pictures: tuple[str, str]
) -> None:
    plain, plain_params = render(engine, request())
    red, params = render(engine, guided([pictures[0]]))
    green, _ = render(engine, guided([pictures[1]]))
    zero, zero_params = render(engine, guided([pictures[0]], weight=0.0))
    assert np.abs(red - plain).max() > 30
    assert np.abs(red - green).max() > 30  # the picture itself matters, not only the adapter
    assert np.abs(zero - plain).max() <= 1  # within rounding
    assert "IP-Adapter" not in plain_params
    # SD1.5 has no known style layers: the whole adapter at its default weight.
    assert str(params["IP-Adapter"]).startswith("tiny-ipadapter [")
    assert (params["IP-Adapter weight"], params["IP-Adapter mode"]) == (0.6, "full")
    assert zero_params["IP-Adapter weight"] == 0
    # The UNet got its own attention back: a plain render after is the same picture.
    [again] = engine.render(request())
    assert np.array_equal(pixels(again), plain)


def test_blend_averages_the_pictures(engine: Engine, pictures: tuple[str, str]) -> None:
    red, _ = render(engine, guided([pictures[0]]))
    green, _ = render(engine, guided([pictures[1]]))
    both, params = render(engine, guided(list(pictures)))
    assert params["IP-Adapter images"] == 2
    assert np.abs(both - red).max() > 10 and np.abs(both - green).max() > 10


def test_style_only_on_sdxl(engine: Engine, pictures: tuple[str, str]) -> None:
    """Style mode is the default on SDXL; it leaves the other layers alone (the parity test
    below shows which layers it takes)."""
    style, params = render(engine, guided([pictures[0]], "tiny-xl"))
    full, full_params = render(engine, guided([pictures[0]], "tiny-xl", mode="full", weight=1.0))
    assert (params["IP-Adapter mode"], params["IP-Adapter weight"]) == ("style", 1)
    assert full_params["IP-Adapter mode"] == "full"
    assert np.abs(full - style).max() > 10
    with pytest.raises(RenderInputError, match="style-only image prompts need an SDXL"):
        engine.render(guided([pictures[0]], mode="style"))


def test_a_picture_renders_the_same_alone_and_in_a_batch(
    engine: Engine, pictures: tuple[str, str]
) -> None:
    """Every evaluated row gets the image tokens meant for it: CFG's negative rows the blank
    picture's, each AND sub-prompt the picture's; a different image prompt is another batch."""
    first = guided([pictures[0]])
    composed = dataclasses.replace(first, prompt="a cat AND a dog:0.6", seed=9)
    alone = [pixels(image) for asked in (first, composed) for image in engine.render(asked)]
    batched = [pixels(image) for [image] in engine.render_batch([first, composed])]
    for solo, in_batch in zip(alone, batched, strict=True):
        assert np.abs(solo.astype(int) - in_batch).max() <= 2
    other = guided([pictures[1]])
    assert first.batch_key() != other.batch_key()
    assert first.batch_key() != request().batch_key()


def test_bad_inputs_are_refused_with_one_sentence(
    engine: Engine, models: Path, pictures: tuple[str, str], tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    # Whole, but not an adapter's tensors (one cut short is not listed: test_incomplete_addons).
    stand_in_checkpoint(models / "ipadapter" / "broken.safetensors")
    cases = [
        (guided([pictures[0]], model="broken"), "broken.safetensors is no IP-Adapter"),
        (guided([str(text)]), "image prompt picture is not a readable image"),
        (
            guided([pictures[0]], model="tiny-xl-ipadapter"),
            "tiny-xl-ipadapter is for the 80-wide family and this checkpoint is 32-wide",
        ),
        (guided([pictures[0]], model="nope"), "unknown IP-Adapter 'nope'"),
        (guided([pictures[0]] * 6), "an image prompt takes 1 to 5 pictures"),
        (guided([pictures[0]], weight=3), "strength must be between 0 and 2"),
    ]
    for asked, message in cases:
        with pytest.raises(RenderInputError, match=message) as refused:
            engine.render(asked)
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("checkpoint", "scale"),
    [
        ("tiny", 0.6),  # SD1.5: every layer at the default weight
        # SDXL's style-only as InstantStyle gives it to diffusers: the second attention of the
        # first up block with attentions (``up_blocks.0`` in SDXL, ``up_blocks.1`` here).
        ("tiny-xl", {"up": {"block_1": [0.0, 1.0]}}),
    ],
)
def test_the_picture_is_diffusers_own_ip_adapter_render(
    engine: Engine, models: Path, pictures: tuple[str, str], checkpoint: str, scale: Any
) -> None:
    """The reference: diffusers' pipeline with ``load_ip_adapter`` and the same noise, sampler
    and preprocessing renders the same picture, so the image tokens (the picture's for the
    prompt, a blank one's for the negative) and the adapter's attention are diffusers' own."""
    from diffusers import DiffusionPipeline
    from transformers import CLIPImageProcessor

    from inference.noise import initial_noise
    from inference.samplers import make_scheduler

    ours, _ = render(engine, guided([pictures[0]], checkpoint))
    plain, _ = render(engine, request(checkpoint))
    pipeline: Any = DiffusionPipeline.from_pretrained(models / checkpoint)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.load_ip_adapter(
        str(models / "ipadapter"),
        subfolder="",
        weight_name=f"{checkpoint}-ipadapter.safetensors",
        image_encoder_folder="image_encoder",
    )
    # The tiny encoder's own input size (diffusers would make a 224-pixel processor).
    pipeline.feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    pipeline.set_ip_adapter_scale(scale)
    pipeline.scheduler = make_scheduler("Euler", pipeline.scheduler.config)
    with Image.open(pictures[0]) as picture:
        reference = pipeline(
            prompt="a cat",
            negative_prompt="",
            ip_adapter_image=picture.convert("RGB"),
            latents=initial_noise(5, (1, 4, 8, 8)),
            num_inference_steps=3,
            guidance_scale=7.0,
            height=64,
            width=64,
            output_type="np",
        ).images[0]
    theirs = (reference * 255).round().astype(np.int16)
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(plain - theirs).max() > 10
