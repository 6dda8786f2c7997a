from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.engine import Engine
from inference.infotext import easel_version, infotext_from_png, parse_infotext
from inference.registry import ModelRegistry
from inference.types import RenderCancelled, RenderInputError, RenderRequest, StepProgress

PixelReader = Callable[[bytes], np.ndarray]


def fast(**changes: Any) -> RenderRequest:
    """A 64x64, 3-step request for the tiny model."""
    return dataclasses.replace(RenderRequest("a cat", width=64, height=64, steps=3), **changes)


# Batched matrix products may round differently from solo ones: allow 2/255 per channel.
BATCH_TOLERANCE = 2


def test_tiny_model_renders_png_with_infotext(engine: Engine, models_dir: Path) -> None:
    request = fast(negative_prompt="blurry", seed=7, cfg_scale=6.5)
    [image] = engine.render(request)
    assert (image.width, image.height, image.seed) == (64, 64, 7)
    assert Image.open(io.BytesIO(image.png)).size == (64, 64)
    assert infotext_from_png(image.png) == image.infotext
    prompt, negative, params = parse_infotext(image.infotext)
    assert (prompt, negative) == ("a cat", "blurry")
    registry = ModelRegistry(models_dir)
    assert params == {
        "Steps": 3,
        "Sampler": "Euler a",
        "CFG scale": 6.5,
        "Seed": 7,
        "Size": "64x64",
        "Model hash": registry.short_hash(registry.resolve("tiny")),
        "Model": "tiny",
        "RNG": "CPU",
        "Version": easel_version(),
    }


def test_same_request_gives_identical_pixels(engine: Engine, pixels: PixelReader) -> None:
    request = fast(seed=11)
    first, second = engine.render(request)[0], engine.render(request)[0]
    assert np.array_equal(pixels(first.png), pixels(second.png))


def test_different_seeds_differ(engine: Engine, pixels: PixelReader) -> None:
    first = engine.render(fast(seed=1))[0]
    second = engine.render(fast(seed=2))[0]
    assert np.abs(pixels(first.png) - pixels(second.png)).mean() > 5


def test_batch_image_equals_solo_render_of_its_seed(engine: Engine, pixels: PixelReader) -> None:
    batch = engine.render(fast(seed=20, count=2))
    assert [image.seed for image in batch] == [20, 21]
    solo = engine.render(fast(seed=21))[0]
    assert np.abs(pixels(batch[1].png) - pixels(solo.png)).max() <= BATCH_TOLERANCE
    assert parse_infotext(batch[1].infotext)[2]["Seed"] == 21
    # Each picture comes with its pixels: the posted grid is composed without decoding PNGs.
    for image in batch:
        assert image.picture is not None
        assert np.array_equal(np.asarray(image.picture), pixels(image.png))


def test_random_seed_is_resolved_and_reported(engine: Engine) -> None:
    [image] = engine.render(fast(seed=-1))
    assert image.seed >= 0
    assert parse_infotext(image.infotext)[2]["Seed"] == image.seed


def test_progress_reports_every_step(engine: Engine) -> None:
    reports: list[StepProgress] = []
    engine.render(fast(seed=3), progress=reports.append)
    assert [(r.step, r.total_steps) for r in reports] == [(1, 3), (2, 3), (3, 3)]
    elapsed = [report.elapsed_s for report in reports]
    assert elapsed == sorted(elapsed)


def test_cancel_during_render(engine: Engine) -> None:
    cancel = threading.Event()
    steps_seen: list[int] = []

    def cancel_after_first_step(report: StepProgress) -> None:
        steps_seen.append(report.step)
        cancel.set()

    with pytest.raises(RenderCancelled):
        engine.render(
            fast(seed=3, steps=10),
            progress=cancel_after_first_step,
            cancel=cancel,
        )
    assert steps_seen == [1]


def test_cancel_before_start(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RenderCancelled):
        engine.render(fast(), cancel=cancel)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 65}, "width must be a multiple of 8 between 64 and 2048, got 65"),
        ({"height": 4096}, "height must be a multiple of 8 between 64 and 2048, got 4096"),
        ({"steps": 0}, "steps must be a whole number between 1 and 150, got 0"),
        ({"steps": 151}, "steps must be a whole number between 1 and 150, got 151"),
        ({"cfg_scale": 31.0}, "CFG scale must be a number between 0 and 30, got 31"),
        ({"cfg_scale": -1.0}, "CFG scale must be a number between 0 and 30, got -1"),
        ({"count": 5}, "count must be a whole number between 1 and 4, got 5"),
        ({"seed": -2}, "seed must be a whole number between 0 and 9223372036854775807, or -1"),
        ({"variation_strength": 1.5}, "variation strength must be between 0 and 1, got 1.5"),
        ({"sampler": "Euler b"}, "unknown sampler 'Euler b'; choose one of: Euler a, Euler,"),
        ({"model": "nope"}, "model 'nope' is not installed on this server: ask an admin"),
    ],
)
def test_bad_input_is_refused_before_any_model_load(
    models_dir: Path, overrides: dict[str, object], message: str
) -> None:
    fresh = Engine(models_dir)
    with pytest.raises(RenderInputError) as error:
        fresh.render(fast(**overrides))
    assert fresh.models.loaded == {}
    assert message in str(error.value)


def test_list_models_and_empty_folder(engine: Engine, tmp_path: Path) -> None:
    assert engine.list_models() == ["tiny", "tiny-inpainting"]
    with pytest.raises(RenderInputError, match=r"^a model is not installed on this server: ask"):
        Engine(tmp_path).render(fast())
