"""Engines for tests and benchmarks that must not pay for diffusion: same contract, no torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from PIL import Image

from inference.infotext import format_infotext, png_with_infotext
from inference.sizes import with_default_size
from inference.types import (
    ProgressCallback,
    RenderCancelled,
    RenderedImage,
    RenderRequest,
    StepProgress,
)

# A ``StuckEngine`` no test released returns after this long: its thread ends with the run.
STUCK_AT_MOST_S = 120.0


@dataclass
class InstantEngine:
    """Renders a flat picture whose colour comes from the seed, after ``seconds`` of "work".

    ``fail_on`` makes prompts containing that text raise, to test failure paths. A batch
    takes as long as one request, as on a GPU with room to spare; ``batches`` records sizes.
    Every progress report carries ``preview``. With ``encode_seconds`` each PNG is still
    "encoding" that long after the render returns, as on the engine's PNG pool.
    """

    seconds: float = 0.0
    encode_seconds: float = 0.0
    fail_on: str | None = None
    preview: bytes | None = None
    rendered: list[RenderRequest] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        [images] = self.render_batch([request], progress, cancel)
        return images

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        for request in requests:
            if self.fail_on and self.fail_on in request.prompt:
                raise RuntimeError(f"engine told to fail on {self.fail_on!r}")
        steps = requests[0].steps
        started = time.perf_counter()
        for step in range(1, steps + 1):
            if cancel is not None and cancel.is_set():
                raise RenderCancelled
            if self.seconds:
                time.sleep(self.seconds / steps)
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress(StepProgress(step, steps, elapsed, self.preview))
        self.batches.append(len(requests))
        self.rendered.extend(requests)
        return [self._encoding_late(self._pictures(request)) for request in requests]

    def _encoding_late(self, images: list[RenderedImage]) -> list[RenderedImage]:
        if not self.encode_seconds:
            return images
        late = []
        for image in images:
            encoded: Future[bytes] = Future()
            timer = threading.Timer(self.encode_seconds, encoded.set_result, [image.png])
            timer.daemon = True
            timer.start()
            late.append(replace(image, encoded=encoded))
        return late

    @staticmethod
    def _pictures(request: RenderRequest) -> list[RenderedImage]:
        width, height = with_default_size(request, native=64).size()
        images = []
        for index in range(request.count):
            seed = request.seed + index
            colour = (seed % 256, (seed // 256) % 256, (seed // 65536) % 256)
            infotext = format_infotext(
                request.prompt,
                request.negative_prompt,
                {
                    "Steps": request.steps,
                    "Sampler": request.sampler,
                    "CFG scale": request.cfg_scale,
                    "Seed": seed,
                    "Size": f"{width}x{height}",
                    "Model": "instant",
                },
            )
            picture = Image.new("RGB", (width // 8, height // 8), colour)
            images.append(
                RenderedImage(
                    png_with_infotext(picture, infotext),
                    seed,
                    infotext,
                    picture.width,
                    picture.height,
                    picture,
                    # As the engine's: a call's first picture carries the steps it ran.
                    steps_run=request.steps if index == 0 else 0,
                )
            )
        return images


@dataclass
class HeldEngine(InstantEngine):
    """Renders wait until ``released`` is set (``started`` says one is waiting); a cancel still
    stops a render held there, as it stops the real engine's at its next step."""

    started: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.started.set()
        while not self.released.wait(0.01):
            if cancel is not None and cancel.is_set():
                raise RenderCancelled
        return super().render_batch(requests, progress, cancel)

    def __enter__(self) -> HeldEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.released.set()  # passed or failed: the bot stops only once its renders end


@dataclass
class StuckEngine(HeldEngine):
    """As ``HeldEngine``, but deaf to a render's stop while held: a step in a hung kernel or
    driver."""

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.started.set()
        self.released.wait(STUCK_AT_MOST_S)  # ``HeldEngine`` then renders at once
        return super().render_batch(requests, progress, cancel)


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class SharedBatchEngine(InstantEngine):
    """Each report of a batch names its job (``StepProgress.request_index``) and carries
    ``preview``, as the real engine's one call for several jobs does; a batch of several jobs
    waits after its last-but-one step until ``finish_batch`` is set (or its render's stop), so
    a test acts while it renders. A lone job renders straight through, unless a test clears
    ``finish_lone`` to queue a batch behind it by conditions, not by its render's time."""

    finish_batch: threading.Event = field(default_factory=threading.Event)
    finish_lone: threading.Event = field(default_factory=_set_event)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        def each(step: StepProgress) -> None:
            for index in range(len(requests)):
                if progress is not None:
                    progress(replace(step, request_index=index))
            if step.step == step.total_steps - 1:
                finish = self.finish_batch if len(requests) > 1 else self.finish_lone
                while not finish.wait(0.01):
                    if cancel is not None and cancel.is_set():
                        return  # raised at the next step

        return super().render_batch(requests, each, cancel)

    def __enter__(self) -> SharedBatchEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Passed or failed: the bot stops only once its renders end.
        self.finish_batch.set()
        self.finish_lone.set()
