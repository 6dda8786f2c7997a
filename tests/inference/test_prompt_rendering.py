"""The web UI prompt language in the sampling loop: schedules, AND, wildcards, batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference.conditioning import PromptEncoder
from inference.engine import Engine
from inference.guidance import PromptGuidance
from inference.infotext import parse_infotext
from inference.passes.output import SDXL_IGNORES_CLIP_SKIP
from inference.prompts import build_plan
from inference.tiny import build_tiny_pipeline, write_tiny_model
from inference.types import RenderInputError, RenderRequest

PixelReader = Callable[[bytes], np.ndarray]
# Batched matrix products may round differently from solo ones (as tests/test_batching.py).
BATCH_TOLERANCE = 2
BASE = RenderRequest("a cat", width=64, height=64, steps=4, seed=7, sampler="Euler")


@pytest.fixture(scope="module")
def pipeline() -> Any:
    return build_tiny_pipeline("sd15")


def render(engine: Engine, prompt: str, **changes: Any) -> bytes:
    return engine.render(dataclasses.replace(BASE, prompt=prompt, **changes))[0].png


def guidance_for(
    pipeline: Any, prompts: Sequence[str], negative: str = "", calls_per_step: int = 1
) -> PromptGuidance:
    return PromptGuidance(
        PromptEncoder(pipeline),
        lambda: [
            build_plan(p, negative, seed=1, steps=4, calls_per_step=calls_per_step) for p in prompts
        ],
    )


def conditioning_per_call(pipeline: Any, prompt: str, sampler: Any) -> list[torch.Tensor]:
    """The positive text conditioning the real UNet received at each of its calls."""
    received: list[torch.Tensor] = []

    def record(_module: Any, args: tuple[Any, ...]) -> None:
        received.append(args[2][1:2].clone())  # rows: [uncond, cond]

    pipeline.scheduler = sampler.from_config(pipeline.scheduler.config)
    guidance = guidance_for(pipeline, [prompt], calls_per_step=pipeline.scheduler.order)
    hook = pipeline.unet.register_forward_pre_hook(record)
    try:
        with torch.inference_mode(), guidance.installed(pipeline):
            pipeline(
                **guidance.pipeline_arguments(1),
                num_inference_steps=4,
                height=64,
                width=64,
                output_type="latent",
                callback_on_step_end=guidance.step_callback(lambda *args: args[3]),
            )
    finally:
        hook.remove()
    return received


def encoded(pipeline: Any, prompt: str) -> torch.Tensor:
    [sub] = build_plan(prompt, seed=1, steps=4).subprompts
    with torch.inference_mode():
        return PromptEncoder(pipeline).encode(sub.schedule[0].chunks).hidden


def test_editing_switches_at_the_scheduled_step(pipeline: Any) -> None:
    from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler

    cat, dog = encoded(pipeline, "a cat"), encoded(pipeline, "a dog")
    calls = conditioning_per_call(pipeline, "[a cat:a dog:2]", EulerDiscreteScheduler)
    # Web UI lookup: 0-based step k takes the first text scheduled until a step >= k.
    assert [torch.equal(c, cat) for c in calls] == [True, True, True, False]
    assert torch.equal(calls[3], dog)
    # Heun calls the UNet twice per step (7 calls for 4 steps): as the web UI, the prompt is
    # planned over 8 and read at each call, so the switch after 1 comes after two calls (it
    # followed the steps: four calls).
    calls = conditioning_per_call(pipeline, "[a cat:a dog:1]", HeunDiscreteScheduler)
    assert [torch.equal(c, cat) for c in calls] == [True] * 2 + [False] * 5
    calls = conditioning_per_call(pipeline, "[a cat|a dog]", EulerDiscreteScheduler)
    assert [torch.equal(c, cat) for c in calls] == [True, True, False, True]


def test_the_real_unet_comes_back_even_after_an_error(pipeline: Any) -> None:
    unet = pipeline.unet
    guidance = guidance_for(pipeline, ["a cat"])

    def fail(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("cancelled")

    with (
        pytest.raises(RuntimeError, match="cancelled"),
        torch.inference_mode(),
        guidance.installed(pipeline),
    ):
        assert pipeline.unet is not unet
        pipeline(
            **guidance.pipeline_arguments(1),
            num_inference_steps=2,
            height=64,
            width=64,
            output_type="latent",
            callback_on_step_end=guidance.step_callback(fail),
        )
    assert pipeline.unet is unet


@pytest.mark.parametrize("guided", [True, False])
def test_and_combines_sub_prompts_as_the_web_ui(pipeline: Any, guided: bool) -> None:
    guidance = guidance_for(pipeline, ["a cat AND a dog:0.7"], negative="blurry")
    guidance.prepare(SimpleNamespace(num_timesteps=4, scheduler=SimpleNamespace(order=1)))
    unet = pipeline.unet
    sample = torch.randn(1, 4, 8, 8)
    rows = 2 if guided else 1
    timestep = torch.tensor(500)

    def alone(prompt: str) -> torch.Tensor:
        hidden = encoded(pipeline, prompt)
        with torch.inference_mode():
            result: torch.Tensor = unet(sample, timestep, hidden, return_dict=False)[0]
        return result

    uncond, cat, dog = alone("blurry"), alone("a cat"), alone("a dog")
    with torch.inference_mode(), guidance.installed(pipeline):
        placeholder = torch.zeros(rows, 77, 32)
        output = pipeline.unet(
            sample.repeat(rows, 1, 1, 1), timestep, placeholder, return_dict=False
        )[0]
    expected = uncond + 1.0 * (cat - uncond) + 0.7 * (dog - uncond)
    assert torch.allclose(output[-1:], expected, atol=1e-5)
    if guided:
        assert torch.allclose(output[:1], uncond, atol=1e-5)


def test_and_identities_on_rendered_pictures(engine: Engine, pixels: PixelReader) -> None:
    cat, dog = pixels(render(engine, "a cat")), pixels(render(engine, "a dog"))
    both = pixels(render(engine, "a cat AND a dog"))
    assert not np.array_equal(both, cat) and not np.array_equal(both, dog)
    halves = pixels(render(engine, "a cat :0.5 AND a cat:0.5"))
    assert np.abs(halves - cat).max() <= BATCH_TOLERANCE
    doubled = pixels(render(engine, "a cat AND a cat"))
    assert np.abs(doubled - cat).max() > BATCH_TOLERANCE  # weights add up: cfg is doubled
    # Guidance off: the composition still applies (the web UI's result at CFG scale 1).
    unguided = pixels(render(engine, "a cat AND a dog", cfg_scale=1.0))
    assert not np.array_equal(unguided, pixels(render(engine, "a cat", cfg_scale=1.0)))


def test_edits_render_as_scheduled(engine: Engine, pixels: PixelReader) -> None:
    cat = pixels(render(engine, "a cat"))
    assert not np.array_equal(pixels(render(engine, "[a cat:a dog:2]")), cat)
    # Switching at the last step (or, web UI quirk, the one before) never shows "a dog".
    assert np.array_equal(pixels(render(engine, "[a cat:a dog:4]")), cat)
    assert np.array_equal(pixels(render(engine, "[a cat:a dog:3]")), cat)
    assert not np.array_equal(pixels(render(engine, "[a cat|a dog]")), cat)
    assert not np.array_equal(pixels(render(engine, "a cat", negative_prompt="[a:b:1]")), cat)


def test_long_prompts_weights_and_break_render(engine: Engine, pixels: PixelReader) -> None:
    long_prompt = ", ".join(["a small cat"] * 50)  # about 200 tokens: 3 chunks
    images = [
        pixels(render(engine, prompt))
        for prompt in (long_prompt, "a cat BREAK a dog", "(a cat:1.4)", "a cat")
    ]
    for index, image in enumerate(images[:-1]):
        assert not np.array_equal(image, images[-1]), index


def test_batch_of_different_prompts_matches_solo_renders(
    engine: Engine, pixels: PixelReader
) -> None:
    requests = [
        dataclasses.replace(BASE, prompt=" ".join(["cat"] * 150), negative_prompt="fog"),
        dataclasses.replace(BASE, prompt="a cat AND a dog:0.5", seed=3),
        dataclasses.replace(BASE, prompt="[a cat|a dog]", negative_prompt="x " * 100, seed=4),
    ]
    batched = engine.render_batch(requests)
    for request, [image] in zip(requests, batched, strict=True):
        [solo] = engine.render(request)
        assert np.abs(pixels(image.png) - pixels(solo.png)).max() <= BATCH_TOLERANCE


def test_wildcards_expand_with_each_image_seed(models_dir: Path, pixels: PixelReader) -> None:
    wildcards = models_dir.parent / "wildcards"
    wildcards.mkdir(exist_ok=True)
    (wildcards / "animal.txt").write_text("cat\ndog\nfox\nowl\nbat\nemu\n")
    engine = Engine(models_dir, wildcards_dir=wildcards)
    request = dataclasses.replace(BASE, prompt="a __animal__ <lora:ink:0.6>", count=3, seed=20)
    first, again = engine.render(request), engine.render(request)
    for index, (image, repeat) in enumerate(zip(first, again, strict=True)):
        expected = build_plan(request.prompt, seed=20 + index, wildcards=wildcards).prompt
        prompt, _negative, params = parse_infotext(image.infotext)
        assert prompt == expected != request.prompt
        assert params["Template"] == request.prompt
        assert "unknown LoRA 'ink' ignored" in str(params["Prompt warnings"])
        assert np.array_equal(pixels(image.png), pixels(repeat.png))
    with pytest.raises(RenderInputError, match="animals"):
        engine.render(dataclasses.replace(BASE, prompt="a __animals__"))


def test_clip_skip_option(engine: Engine, pixels: PixelReader) -> None:
    skipped = engine.render(dataclasses.replace(BASE, options={"clip_skip": 2}))[0]
    assert parse_infotext(skipped.infotext)[2]["Clip skip"] == 2
    assert not np.array_equal(pixels(skipped.png), pixels(render(engine, "a cat")))
    with pytest.raises(RenderInputError, match=r"clip skip must be in 1\.\.12, got 0"):
        engine.render(dataclasses.replace(BASE, options={"clip_skip": 0}))


def test_img2img_and_inpaint_follow_the_prompt_language(
    engine: Engine, tmp_path: Path, pixels: PixelReader
) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 120, 40)).save(init)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    for mode, mask_image in (("img2img", None), ("inpaint", str(mask))):
        changes: dict[str, Any] = {
            "mode": mode,
            "init_image": str(init),
            "mask_image": mask_image,
            "steps": 8,
            "denoising_strength": 0.5,
        }
        plain = pixels(render(engine, "a cat", **changes))
        composed = pixels(render(engine, "a cat AND [a dog:a bird:0.5]", **changes))
        assert not np.array_equal(plain, composed), mode


def test_sdxl_renders_weights_and_and(tmp_path: Path, pixels: PixelReader) -> None:
    write_tiny_model(tmp_path / "tiny-xl", family="sdxl")
    engine = Engine(tmp_path)
    plain = pixels(render(engine, "a cat"))
    composed = pixels(render(engine, "(a cat:1.3) AND a dog:0.5", negative_prompt="x " * 90))
    assert plain.shape == composed.shape == (64, 64, 3)
    assert not np.array_equal(plain, composed)
    halves = pixels(render(engine, "a cat:0.5 AND a cat:0.5"))
    assert np.abs(halves - plain).max() <= BATCH_TOLERANCE
    # SDXL ignores clip skip, as the web UI's does: its text keeps it, and says so.
    [skipped] = engine.render(dataclasses.replace(BASE, options={"clip_skip": 2}))
    params = parse_infotext(skipped.infotext)[2]
    assert (params["Clip skip"], params["Prompt warnings"]) == (2, SDXL_IGNORES_CLIP_SKIP)
    assert np.array_equal(pixels(skipped.png), plain)


def test_pad_conds_attends_empty_chunks_instead_of_masking(
    engine: Engine, pixels: PixelReader
) -> None:
    long_negative = "blurry " * 100
    masked = pixels(render(engine, "a cat", negative_prompt=long_negative))
    padded = engine.render(
        dataclasses.replace(BASE, options={"pad_conds": True}, negative_prompt=long_negative)
    )[0]
    assert parse_infotext(padded.infotext)[2]["Pad conds"] == "True"
    assert not np.array_equal(pixels(padded.png), masked)
    # Equal lengths need no padding: the option changes nothing.
    same_length = engine.render(dataclasses.replace(BASE, options={"pad_conds": True}))[0]
    assert np.array_equal(pixels(same_length.png), pixels(render(engine, "a cat")))
