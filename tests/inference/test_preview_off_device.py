"""Preview JPEGs are encoded on the engine's CPU pool, never on the device thread; progress
reports still arrive in step order, all of them before the render returns, and the pictures
are the same bytes with previews on or off."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from inference.engine import Engine
from inference.preview import PreviewFrame
from inference.types import RenderRequest, StepProgress

STEPS = 4


def test_the_device_thread_renders_on_while_a_preview_is_still_encoding(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = PreviewFrame.jpeg
    last_step_reached = threading.Event()
    encoded_on: list[str] = []
    first_waited_for_the_last: list[bool] = []

    def slow_first_jpeg(frame: PreviewFrame) -> bytes:
        encoded_on.append(threading.current_thread().name)
        if len(encoded_on) == 1:
            # Held until the device thread has asked for the last step's preview: it can
            # only get there if it did not wait for this one.
            first_waited_for_the_last.append(last_step_reached.wait(timeout=30))
        elif len(encoded_on) == STEPS:
            last_step_reached.set()
        return encode(frame)

    monkeypatch.setattr(PreviewFrame, "jpeg", slow_first_jpeg)
    reports: list[tuple[StepProgress, str]] = []

    def progress(step: StepProgress) -> None:
        reports.append((step, threading.current_thread().name))

    request = RenderRequest("a cat", seed=5, steps=STEPS, width=64, height=64)
    render_thread = threading.current_thread().name
    Engine(models_dir, preview_interval_s=0).render(request, progress=progress)

    assert first_waited_for_the_last == [True]
    assert len(encoded_on) == STEPS
    assert all(name.startswith("easel-png") and name != render_thread for name in encoded_on)
    # In step order, every one with its preview, all delivered before render returned.
    assert [step.step for step, _ in reports] == list(range(1, STEPS + 1))
    assert all(step.preview is not None for step, _ in reports)


class StepCounter(threading.Event):
    """A cancel event that is never set, and tells when the engine has checked it after
    every step (the check follows each step's report)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.checks = 0
        self.all_steps_done = threading.Event()
        self._steps = steps

    def is_set(self) -> bool:
        self.checks += 1
        if self.checks >= self._steps:
            self.all_steps_done.set()
        return False


def test_a_slow_preview_holds_later_reports_back_instead_of_arriving_after_them(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encode = PreviewFrame.jpeg
    steps = StepCounter(STEPS)
    held_until_the_end: list[bool] = []

    def slow_jpeg(frame: PreviewFrame) -> bytes:
        # Finished only once every later step has been reported (and held back).
        held_until_the_end.append(steps.all_steps_done.wait(timeout=30))
        return encode(frame)

    monkeypatch.setattr(PreviewFrame, "jpeg", slow_jpeg)
    reports: list[StepProgress] = []
    request = RenderRequest("a cat", seed=5, steps=STEPS, width=64, height=64)
    # One preview, the first step's; the later reports have none.
    Engine(models_dir, preview_interval_s=3600).render(request, reports.append, steps)
    assert held_until_the_end == [True]
    assert [report.step for report in reports] == list(range(1, STEPS + 1))
    assert [report.preview is not None for report in reports] == [True] + [False] * (STEPS - 1)


def test_pictures_are_the_same_bytes_with_previews_on_or_off(models_dir: Path) -> None:
    request = RenderRequest("a lighthouse", seed=11, steps=3, width=64, height=64, count=2)
    plain = Engine(models_dir).render(request)
    previewed = Engine(models_dir, preview_interval_s=0).render(request, progress=lambda _: None)
    assert [image.png for image in previewed] == [image.png for image in plain]
