"""The GPU-seconds reserved for a job before it runs (``accounting.estimated_cost``) grow with
its pictures, their size, its steps and its face fixing: under a GPU-seconds limit the
reservation decides whether a job is taken."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.edits import Picture, vary_request
from bot.jobs.accounting import ESTIMATED_SECONDS_PER_STEP_512, estimated_cost
from inference.face_options import FIX_FACES
from inference.types import RenderRequest


def seconds(count: int = 1, size: int = 512, steps: int = 20, **options: object) -> float:
    request = RenderRequest(
        "a cat", steps=steps, width=size, height=size, count=count, options=dict(options)
    )
    return estimated_cost(request).gpu_seconds


def test_the_estimate_grows_with_the_pictures_their_pixels_and_steps() -> None:
    one = seconds()  # one 512x512 picture: the constant's own unit
    assert one == pytest.approx(20 * ESTIMATED_SECONDS_PER_STEP_512, abs=0.001)
    assert seconds(steps=40) == pytest.approx(2 * one, abs=0.002)
    assert seconds(count=4) == pytest.approx(4 * one, abs=0.002)
    assert seconds(size=1024) == pytest.approx(4 * one, abs=0.002)


def test_fixing_faces_adds_one_face_pass_to_every_picture() -> None:
    face_pass = seconds(**{FIX_FACES: True}) - seconds()
    assert face_pass > 0
    assert seconds(count=4, **{FIX_FACES: True}) - seconds(count=4) == pytest.approx(
        4 * face_pass, abs=0.004
    )


def test_a_side_the_request_leaves_out_is_its_models_native_side() -> None:
    """An unsized request renders at its model's native size: an SDXL one (1024) costs four
    times an SD1.5 one (512), and what an explicit 1024x1024 costs."""
    unsized = RenderRequest("a cat", steps=20)
    sized = RenderRequest("a cat", steps=20, width=1024, height=1024)
    assert estimated_cost(unsized, native_side=1024) == estimated_cost(sized)
    assert estimated_cost(unsized, native_side=1024).gpu_seconds == pytest.approx(
        4 * estimated_cost(unsized, native_side=512).gpu_seconds, abs=0.001
    )


def test_an_edit_of_a_picture_reserves_at_the_pictures_size(tmp_path: Path) -> None:
    """/vary, an edit or an expand leave the size out: the engine renders at the input
    picture's (``inference.sizes.default_size``), not at the model's native size."""
    picture = tmp_path / "small.png"
    Image.new("RGB", (512, 384)).save(picture)
    base = RenderRequest("a cat", steps=20, model="xl")
    varied = vary_request(base, Picture(picture, 512, 384), "subtle")
    assert (varied.width, varied.height) == (None, None)
    at_its_size = RenderRequest("a cat", steps=varied.steps, width=512, height=384)
    on_sdxl = estimated_cost(varied, native_side=1024).gpu_seconds
    assert on_sdxl == estimated_cost(at_its_size).gpu_seconds
    # A picture gone before the estimate: the model's native size, never less.
    picture.unlink()
    at_native = RenderRequest("a cat", steps=varied.steps, width=1024, height=1024)
    assert estimated_cost(varied, native_side=1024) == estimated_cost(at_native)
