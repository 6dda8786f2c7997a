"""A batch's reports split by request: each request's preview made of its own pictures, and a
preview whose pictures cannot be told apart shown to no one."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image

from inference.preview import PreviewFrame
from inference.progress import BatchProgress, OrderedProgress
from inference.types import StepProgress

STEP = StepProgress(3, 10, 1.0)


def frame_of(*colours: int) -> PreviewFrame:
    """One 8x8 flat picture per colour (its grey level)."""
    return PreviewFrame(
        torch.tensor(colours, dtype=torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 8, 8, 3)
    )


def received(
    owners: list[int], frame: PreviewFrame, pictures: list[int] | None = None
) -> list[tuple[int | None, tuple[int, int] | None, int | None]]:
    """Each report as (its request, its preview's size, the preview's darkest grey)."""
    reports: list[StepProgress] = []
    with ThreadPoolExecutor(2) as encoder:
        ordered = OrderedProgress(reports.append, encoder)
        progress = BatchProgress(ordered, owners)
        if pictures is not None:
            progress = progress.of_pictures(pictures)
        progress.send(STEP, frame)
        ordered.flush()
    seen = []
    for report in reports:
        assert (report.step, report.total_steps) == (STEP.step, STEP.total_steps)
        if report.preview is None:
            seen.append((report.request_index, None, None))
            continue
        with Image.open(io.BytesIO(report.preview)) as preview:
            darkest = preview.convert("L").getextrema()[0]
            seen.append((report.request_index, preview.size, darkest))
    return seen


def test_each_request_gets_a_preview_of_its_own_pictures() -> None:
    shown = received([0, 0, 1], frame_of(250, 250, 10))
    # Request 0: its two light pictures side by side; request 1: its dark one alone.
    assert [(request, size) for request, size, _ in shown] == [(0, (256, 128)), (1, (256, 256))]
    assert shown[0][2] is not None and shown[0][2] > 200
    assert shown[1][2] is not None and shown[1][2] < 50


def test_a_call_of_one_requests_pictures_shows_it_any_preview() -> None:
    # A face of picture 2 (request 1's) being fixed: one picture, all request 1's.
    assert [(r, size) for r, size, _ in received([0, 0, 1], frame_of(10), [2])] == [(1, (256, 256))]


def test_a_preview_of_fewer_pictures_than_the_call_is_shown_to_no_one() -> None:
    # A face being fixed in a call of two requests' pictures: whose it is is not known.
    assert received([0, 1], frame_of(10)) == [(0, None, None), (1, None, None)]
