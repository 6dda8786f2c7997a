"""The GPU-seconds reserved for a job before it runs (``accounting.estimated_cost``) grow with
its pictures, their size, its steps and its face fixing: under a GPU-seconds limit the
reservation decides whether a job is taken."""

from __future__ import annotations

import pytest

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
