"""``easel run`` whose device hangs inside a step of each render whose prompt says "never
ends" (a hung kernel: deaf to the stop), with the stop's budget given, for a test to stop it
as a process.

    python -m tests.e2e.stuck_device_main STOP_BUDGET_S [load]

Prints "stuck in a step" once a render hangs there. The real engine renders the rest. With
``load``, the device warms up at the start (``EASEL_WARM_START=on``) and every model load
hangs instead (a slow disk, for as long as the test needs): it prints "stuck in a load".
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from bot import app
from bot.cli.main import main
from bot.engines import engine_factory_for
from bot.settings import Settings
from inference.progress import StepTracker
from inference.registry import ModelEntry
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import EngineFactory, RenderEngine

HANGS = "never ends"


class HangingStop(threading.Event):
    """The stop flag of a render that hangs at its first step's end, never set."""


class HangsOnItsPrompt:
    """The real engine, but a render whose prompt says ``HANGS`` gets a ``HangingStop``."""

    def __init__(self, engine: RenderEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)  # its warm-up, probe, loads: the real engine's

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        return self._engine.render(request, progress, _stop_for([request], cancel))

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        return self._engine.render_batch(requests, progress, _stop_for(requests, cancel))


def _stop_for(
    requests: Sequence[RenderRequest], cancel: threading.Event | None
) -> threading.Event | None:
    return HangingStop() if any(HANGS in request.prompt for request in requests) else cancel


_step_end = StepTracker.on_step_end


def _hanging_step_end(tracker: StepTracker, *args: Any) -> dict[str, Any]:
    if isinstance(tracker.cancel, HangingStop):
        print("stuck in a step", flush=True)
        tracker.cancel.wait()  # never set: the device thread stays inside the step
    return _step_end(tracker, *args)


def _hanging_load(_engine: Any, _entry: ModelEntry) -> Any:
    print("stuck in a load", flush=True)
    threading.Event().wait()  # never set: the device thread stays inside the load
    raise AssertionError("unreachable")


def _hanging_engines(settings: Settings) -> EngineFactory:
    real = engine_factory_for(settings)
    return lambda device: HangsOnItsPrompt(real(device))


if __name__ == "__main__":
    app.STOP_BUDGET_S = float(sys.argv[1])
    app.CLOSING_RESERVE_S = 0.5
    app.engine_factory_for = _hanging_engines  # type: ignore[assignment]
    StepTracker.on_step_end = _hanging_step_end  # type: ignore[method-assign,assignment]
    if sys.argv[2:] == ["load"]:
        from inference.engine import Engine

        os.environ["EASEL_WARM_START"] = "on"
        Engine._load_pipeline = _hanging_load  # type: ignore[method-assign,assignment]
    sys.exit(main(["run"]))
