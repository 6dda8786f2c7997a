"""What the device thread does, timed: the one wrapper around the engine that the backlog
benchmarks (``device_busy.py``, ``gpu.py``) hand to a ``DeviceWorker``.

Every interval ends with the device synchronised, so queued device work counts as busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch

from inference.engine import Engine
from inference.passes.denoise import Denoiser
from inference.types import ProgressCallback, RenderedImage, RenderRequest, StepProgress

_T = TypeVar("_T")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class BusyClock:
    """Intervals spent in some work on ``device`` (from any thread)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            with self._lock:
                self.intervals.append((started, time.perf_counter()))

    def busy_s(self, since: float = float("-inf"), until: float = float("inf")) -> float:
        """Time inside the intervals, counting only what lies between ``since`` and ``until``."""
        return sum(max(0.0, min(end, until) - max(start, since)) for start, end in self.intervals)


@dataclass(frozen=True)
class TimedDenoiser(Denoiser):
    """The engine's pipeline calls (noise, prompt encoding, UNet, VAE decode), timed."""

    clock: BusyClock = field(default_factory=lambda: BusyClock("cpu"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.timing():
            return super().__call__(*args, **kwargs)


@dataclass
class TimedEngine:
    """The engine the device thread holds, timing its render calls (``renders``: the device
    thread at work) and its pipeline calls (``denoising``: the device at work), and, while
    ``step_ends`` is set, every sampling step's synchronised end. A wrapper, not a subclass:
    the shipped engine comes from the product's own factory."""

    engine: Engine
    step_ends: list[float] | None = None
    renders: BusyClock = field(init=False)
    denoising: BusyClock = field(init=False)

    def __post_init__(self) -> None:
        self.renders = BusyClock(self.engine.device)
        self.denoising = BusyClock(self.engine.device)
        tools = self.engine.tools
        timed = TimedDenoiser(**vars(tools.denoise), clock=self.denoising)
        self.engine.tools = replace(tools, denoise=timed)

    def clear(self) -> None:
        self.renders.intervals.clear()
        self.denoising.intervals.clear()

    def prepare(self, requests: Sequence[RenderRequest]) -> None:
        self.engine.prepare(requests)

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        return self._timed(lambda report: self.engine.render(request, report, cancel), progress)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        return self._timed(
            lambda report: self.engine.render_batch(requests, report, cancel), progress
        )

    def _timed(
        self, work: Callable[[ProgressCallback], _T], progress: ProgressCallback | None
    ) -> _T:
        def report(step: StepProgress) -> None:
            if self.step_ends is not None:
                synchronize(self.engine.device)
                self.step_ends.append(time.perf_counter())
            if progress is not None:
                progress(step)

        with self.renders.timing():
            return work(report)
