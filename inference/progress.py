"""Step progress across a render's denoising passes: ``StepProgress`` reports (with a latent
preview at most every ``preview_interval_s``), tile progress of a model upscale, and the
cancel check at every step.

A preview's JPEG is encoded on the engine's CPU pool, not on the device thread
(``OrderedProgress``); reports still arrive in step order, and all of them before the render
returns. In a batch each report names the request it is for, and its preview shows that
request's pictures alone (``BatchProgress``, ``for_request``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from inference.preview import LatentPreviewer, PreviewFrame
from inference.types import ProgressCallback, RenderCancelled, StepProgress

if TYPE_CHECKING:
    from inference.model_cache import LoadedModel

log = logging.getLogger(__name__)


class OrderedProgress:
    """A render's progress reports, delivered in step order while their previews' JPEGs
    are encoded on ``encoder``: a report waits for its own preview, and the reports after it
    wait behind it (an older preview can never arrive after a newer one)."""

    def __init__(self, progress: ProgressCallback, encoder: Executor) -> None:
        self._progress = progress
        self._encoder = encoder
        # Reports not delivered yet, oldest first; the lock keeps deliveries in that order
        # whichever thread (device or pool) finds them ready.
        self._waiting: deque[tuple[StepProgress, Future[bytes] | None]] = deque()
        self._lock = threading.Lock()

    def __call__(self, step: StepProgress) -> None:
        self.send(step, None)

    def send(self, step: StepProgress, frame: PreviewFrame | None) -> None:
        """Deliver ``step``, with ``frame`` encoded as its preview (None: no new preview)."""
        encoding = None if frame is None else self._encoder.submit(frame.jpeg)
        with self._lock:
            self._waiting.append((step, encoding))
        if encoding is not None:
            encoding.add_done_callback(lambda _: self._deliver_ready())
        self._deliver_ready()

    def flush(self) -> None:
        """Wait for every preview still encoding and deliver the rest: the render's result
        must come after its last report."""
        with self._lock:
            encodings = [encoding for _, encoding in self._waiting if encoding is not None]
        wait(encodings)
        self._deliver_ready()

    def _deliver_ready(self) -> None:
        with self._lock:
            while self._waiting:
                step, encoding = self._waiting[0]
                if encoding is not None:
                    if not encoding.done():
                        return
                    step = dataclasses.replace(step, preview=_encoded(encoding))
                self._waiting.popleft()
                self._progress(step)


def _encoded(encoding: Future[bytes]) -> bytes | None:
    try:
        return encoding.result()
    except Exception:  # a preview is a nicety: the report goes on without it
        log.exception("preview encoding failed")
        return None


class BatchProgress:
    """The reports of one pipeline call whose pictures belong to several requests of a batch
    (members batched together, of any server, private or not): each request gets every report
    as its own (``StepProgress.request_index``), with a preview of its own pictures alone.

    The preview's colours are still made once for the whole call (one device op and copy, as
    for a lone request); only the JPEGs are made per request."""

    def __init__(self, reports: OrderedProgress, owners: Sequence[int]) -> None:
        """``owners[i]``: the index of the request picture ``i`` of the call belongs to."""
        self._reports = reports
        self._owners = tuple(owners)
        self._requests = tuple(dict.fromkeys(self._owners))

    def of_pictures(self, pictures: Sequence[int]) -> BatchProgress:
        """The reports of a pipeline call that renders only these pictures of this one."""
        return BatchProgress(self._reports, [self._owners[picture] for picture in pictures])

    def __call__(self, step: StepProgress) -> None:
        # A preview already made cannot be split: it stays only if one request owns it all.
        shown = step if len(self._requests) == 1 else dataclasses.replace(step, preview=None)
        for request in self._requests:
            self._reports(dataclasses.replace(shown, request_index=request))

    def send(self, step: StepProgress, frame: PreviewFrame | None) -> None:
        """``step`` to each request, ``frame``'s pictures of that request as its preview."""
        if frame is not None and len(self._requests) == 1:
            self._reports.send(dataclasses.replace(step, request_index=self._requests[0]), frame)
        elif frame is None or frame.count != len(self._owners):
            # No preview, or one of fewer pictures than the call's (a face being fixed):
            # whose pictures it shows is not known here, so it is shown to no one.
            self(dataclasses.replace(step, preview=None))
        else:
            for request, start, stop in _runs(self._owners):
                owned = dataclasses.replace(step, request_index=request)
                self._reports.send(owned, frame.rows(start, stop))


def _runs(owners: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """``(owner, start, stop)`` for each run of equal owners (a request's pictures are
    consecutive in a batch's call, so each request has one run)."""
    start = 0
    for index in range(1, len(owners) + 1):
        if index == len(owners) or owners[index] != owners[start]:
            yield owners[start], start, index
            start = index


def for_request(progress: ProgressCallback | None, index: int) -> ProgressCallback | None:
    """``progress`` of request ``index`` of a batch rendered one request at a time: what the
    request's own render reports, previews included, is that request's alone."""
    if progress is None:
        return None
    report = progress

    def owned(step: StepProgress) -> None:
        report(dataclasses.replace(step, request_index=index))

    return owned


@contextmanager
def ordered_progress(
    progress: ProgressCallback | None, encoder: Executor
) -> Iterator[OrderedProgress | None]:
    """``progress`` as an ``OrderedProgress`` for one render, flushed when the render ends
    (one already ordered, by an outer render, stays as it is)."""
    if progress is None or isinstance(progress, OrderedProgress):
        yield progress
        return
    ordered = OrderedProgress(progress, encoder)
    try:
        yield ordered
    finally:
        ordered.flush()


class StepTracker:
    """Step progress and cancel checks across one or two denoising passes (hires fix)."""

    def __init__(
        self,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        preview_interval_s: float | None = None,
        later_steps: int = 0,
    ) -> None:
        self.progress = progress
        self.cancel = cancel
        self.later_steps = later_steps  # an estimate for passes still to come
        # Set once the model is loaded (and only when previews were asked for).
        self.previewer: LatentPreviewer | None = None
        self.preview_interval_s = preview_interval_s
        self.started = time.monotonic()
        self.last_preview = float("-inf")
        self.finished_steps = 0
        self.pass_steps = 0

    @property
    def steps_run(self) -> int:
        """The denoising steps run so far, over every pass."""
        return self.finished_steps + self.pass_steps

    def begin_pass(self) -> None:
        self.finished_steps += self.pass_steps
        self.pass_steps = 0

    def _preview_due(self, now: float) -> bool:
        interval = self.preview_interval_s
        return interval is not None and now - self.last_preview >= interval

    def on_tile(self, done: int, total: int) -> None:
        """Progress of a model upscale, tile by tile (it has no denoising steps)."""
        if self.progress is not None:
            self.progress(StepProgress(done, total, time.monotonic() - self.started))

    def on_step_end(
        self, pipeline: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        self.pass_steps = step_index + 1
        if self.progress is not None:
            total = self.finished_steps + pipeline.num_timesteps + self.later_steps
            now = time.monotonic()
            step = self.finished_steps + self.pass_steps
            report = StepProgress(step, total, now - self.started)
            if self.previewer is not None and self._preview_due(now):
                self.last_preview = now
                self._send_with_preview(report, self.previewer.frame(tensors["latents"]))
            else:
                self.progress(report)
        raise_if_cancelled(self.cancel)
        return tensors

    def _send_with_preview(self, report: StepProgress, frame: PreviewFrame) -> None:
        assert self.progress is not None
        if isinstance(self.progress, OrderedProgress | BatchProgress):
            self.progress.send(report, frame)
        else:  # a pass called without the engine's ordering: encoded on this thread
            self.progress(dataclasses.replace(report, preview=frame.jpeg()))


def previewer_for(
    model: LoadedModel, progress: ProgressCallback | None, preview_interval_s: float | None
) -> LatentPreviewer | None:
    """The model's latent previewer, when previews were asked for and someone listens."""
    if preview_interval_s is None or progress is None:
        return None
    return model.previewer


def raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RenderCancelled("render cancelled")
