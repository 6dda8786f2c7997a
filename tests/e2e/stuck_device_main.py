"""``easel run`` (or ``easel worker``) whose device hangs inside a step of each render whose
prompt says "never ends" (a hung kernel: deaf to the stop), with the stop's budget given, for
a test to stop it as a process.

    python -m tests.e2e.stuck_device_main STOP_BUDGET_S [load [LOAD_S]] [--worker]

Prints "stuck in a step" once a render hangs there. The real engine renders the rest. With
``load``, the device warms up at the start (``EASEL_WARM_START=on``) and every model load
hangs instead (a slow disk, for as long as the test needs, or ``LOAD_S`` seconds before it
loads): it prints "stuck in a load".
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from bot import app, engines
from bot.cli.entry import main
from bot.engines import engine_factory_for
from bot.jobs.broker import worker
from bot.settings import Settings
from inference.engine import Engine
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


_load = Engine._load_pipeline


def _hanging_load(load_s: float | None) -> Any:
    def load(engine: Engine, entry: ModelEntry) -> Any:
        print("stuck in a load", flush=True)
        if load_s is None:
            threading.Event().wait()  # never set: the device thread stays inside the load
        else:
            time.sleep(load_s)
        return _load(engine, entry)

    return load


def _hanging_engines(settings: Settings) -> EngineFactory:
    real = engine_factory_for(settings)
    return lambda device: HangsOnItsPrompt(real(device))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("stop_budget_s", type=float)
    parser.add_argument("load", nargs="?", choices=["load"])
    parser.add_argument("load_s", nargs="?", type=float, help="default: the load never ends")
    parser.add_argument("--worker", action="store_true", help="easel worker, not easel run")
    args = parser.parse_args()
    app.STOP_BUDGET_S = worker.STOP_BUDGET_S = args.stop_budget_s
    worker.RENDER_AT_STOP_S = min(worker.RENDER_AT_STOP_S, args.stop_budget_s)
    app.CLOSING_RESERVE_S = 0.5
    app.engine_factory_for = _hanging_engines  # type: ignore[assignment]
    engines.engine_factory_for = _hanging_engines  # ``easel worker`` imports it when it starts
    StepTracker.on_step_end = _hanging_step_end  # type: ignore[method-assign,assignment]
    if args.load is not None:
        os.environ["EASEL_WARM_START"] = "on"
        Engine._load_pipeline = _hanging_load(args.load_s)  # type: ignore[method-assign]
    sys.exit(main(["worker" if args.worker else "run"]))
