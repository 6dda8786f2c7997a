"""One thread per device: the async seam in front of the synchronous engine.

The engine is plain torch code that must never run on the event loop and never share a device
with another thread (a model switch must not race a running job), so each device gets a
single-thread executor that owns its engine for the life of the process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, runtime_checkable

from inference.types import (
    ProgressCallback,
    RenderCancelled,
    RenderedImage,
    RenderRequest,
    StepProgress,
)


class RenderEngine(Protocol):
    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]: ...

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]: ...


@runtime_checkable
class PreparingEngine(Protocol):
    def prepare(self, requests: Sequence[RenderRequest]) -> None: ...


@runtime_checkable
class WarmingEngine(Protocol):
    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None: ...


EngineFactory = Callable[[str], RenderEngine]
_T = TypeVar("_T")
log = logging.getLogger(__name__)


class DeviceWorker:
    """Runs renders for one device on its own thread; the engine is built there, at the
    first job or, with a warm start, when the queue starts."""

    # Compatible txt2img requests rendered in one pipeline call (see Engine.render_batch).
    max_batch = 4

    def __init__(
        self, device: str, engine_factory: EngineFactory, *, warm_start: bool = False
    ) -> None:
        """``warm_start``: ``warm_up`` builds the engine and warms it (``EASEL_WARM_START``)."""
        self.device = device
        self._engine_factory = engine_factory
        self.warm_start = warm_start
        self._engine: RenderEngine | None = None
        # Set by ``close``: a warm-up still running stops at its next step instead of
        # holding the shutdown through a model load and a render nobody will use.
        self._closing = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"easel-{device}")
        # CPU work for the requests expected next, done while the device renders.
        self._preparer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"easel-{device}-prepare"
        )

    async def render(
        self,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_id: str | None = None,  # the queue's id for the job: only remote slots need it
    ) -> list[RenderedImage]:
        return await self._on_thread(
            lambda engine, report: engine.render(request, report, cancel), progress
        )

    async def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        return await self._on_thread(
            lambda engine, report: engine.render_batch(requests, report, cancel), progress
        )

    def prepare(self, requests: Sequence[RenderRequest]) -> None:
        """Let the engine prepare ``requests`` (expected to render next) on a CPU thread;
        returns at once. Nothing happens before the engine exists or if it cannot."""
        engine = self._engine
        if isinstance(engine, PreparingEngine):
            self._preparer.submit(engine.prepare, requests)

    def warm_up(self, model: str | None = None) -> None:
        """With ``warm_start``, build the engine and let it warm up (``Engine.warm_up``) on
        the device thread with ``model`` (the first queued job's; None: the default);
        returns at once. Jobs submitted meanwhile wait their turn on the thread, as they
        would for the model load. A failure is logged, never raised: the first job then
        builds or loads what the warm-up could not. ``close`` stops it."""
        if self.warm_start:
            self._executor.submit(self._warm, model)

    def _warm(self, model: str | None) -> None:
        try:
            engine = self._built()
            if isinstance(engine, WarmingEngine):
                engine.warm_up(self._closing, model)
        except RenderCancelled:
            log.info("warm start on %s stopped: shutting down", self.device)
        except Exception:
            log.warning(
                "warm start on %s failed; the first job loads its model", self.device, exc_info=True
            )

    def _built(self) -> RenderEngine:
        """This device's engine, built on first use (on the device thread)."""
        if self._engine is None:
            self._engine = self._engine_factory(self.device)
        return self._engine

    async def _on_thread(
        self,
        work: Callable[[RenderEngine, ProgressCallback | None], _T],
        progress: Callable[[StepProgress], None] | None,
    ) -> _T:
        loop = asyncio.get_running_loop()
        thread_progress: ProgressCallback | None = None
        if progress is not None:
            report = progress

            def thread_progress(step: StepProgress) -> None:
                # Called on the device thread: hand the report to the event loop.
                loop.call_soon_threadsafe(report, step)

        def run() -> _T:
            return work(self._built(), thread_progress)

        return await loop.run_in_executor(self._executor, run)

    def close(self) -> None:
        """Stop a running warm-up, wait for the running render (if any), stop the thread."""
        self._closing.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._preparer.shutdown(wait=True, cancel_futures=True)
