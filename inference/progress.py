"""Step progress across a render's denoising passes: ``StepProgress`` reports (with a latent
preview at most every ``preview_interval_s``), tile progress of a model upscale, and the
cancel check at every step.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from inference.preview import LatentPreviewer
from inference.types import ProgressCallback, RenderCancelled, StepProgress

if TYPE_CHECKING:
    from inference.model_cache import LoadedModel


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
            preview = None
            if self.previewer is not None and self._preview_due(now):
                preview = self.previewer.jpeg(tensors["latents"])
                self.last_preview = now
            step = self.finished_steps + self.pass_steps
            self.progress(StepProgress(step, total, now - self.started, preview))
        raise_if_cancelled(self.cancel)
        return tensors


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
