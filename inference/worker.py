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
class ProbingEngine(Protocol):
    def probe(self) -> None: ...


@runtime_checkable
class WarmingEngine(Protocol):
    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None: ...


@runtime_checkable
class LoadingEngine(Protocol):
    @property
    def loading(self) -> str | None:
        """The model being read from disk and put on the device now (its name), else None."""
        ...


@runtime_checkable
class ListingEngine(Protocol):
    def list_models(self) -> list[str]: ...


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
        # What the device thread is inside now (``in_hand``), written there alone; whether
        # that is a render (a job's, whose model load is the job's), and whether it builds the
        # engine now (``loading``).
        self._in_hand: str | None = None
        self._rendering = False
        self._building = False
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
        job_id: str | None = None,  # the queue's id for the job, named by ``in_hand``
    ) -> list[RenderedImage]:
        return await self._on_thread(
            lambda engine, report: engine.render(request, report, cancel),
            progress,
            _in_hand([] if job_id is None else [job_id]),
        )

    async def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_ids: Sequence[str] = (),  # the queue's ids for the jobs, named by ``in_hand``
    ) -> list[list[RenderedImage]]:
        return await self._on_thread(
            lambda engine, report: engine.render_batch(requests, report, cancel),
            progress,
            _in_hand(job_ids),
        )

    def prepare(self, requests: Sequence[RenderRequest]) -> None:
        """Let the engine prepare ``requests`` (expected to render next) on a CPU thread;
        returns at once. Nothing happens before the engine exists or if it cannot."""
        engine = self._engine
        if isinstance(engine, PreparingEngine):
            self._preparer.submit(engine.prepare, requests)

    def models(self) -> frozenset[str] | None:
        """The models this device's engine renders (a walk of its folders, kept for a second:
        call it on a thread); None before the engine is built, or for one that lists none."""
        engine = self._engine
        return frozenset(engine.list_models()) if isinstance(engine, ListingEngine) else None

    def warm_up(self, model: str | None = None) -> None:
        """With ``warm_start``, build the engine and let it warm up (``Engine.warm_up``) on
        the device thread with ``model`` (the first queued job's; None: the default);
        returns at once. Jobs submitted meanwhile wait their turn on the thread, as they
        would for the model load. A failure is logged, never raised: the first job then
        builds or loads what the warm-up could not. ``close`` stops it."""
        if self.warm_start:
            self._executor.submit(self._warm, model)

    def _warm(self, model: str | None) -> None:
        self._in_hand = "its warm-up"
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
        finally:
            self._in_hand = None

    async def probe(self) -> Exception | None:
        """What the device raises at a tiny computation (``Engine.probe``) on its own thread,
        its engine built first; None when it computes, or when the engine has no probe (a
        test's). Asked once a render raised what may mean a lost device (``device_lost``),
        and before the device takes its first job."""

        def run() -> Exception | None:
            self._in_hand = "its probe"  # a device hung here must not hold the exit either
            try:
                engine = self._built()
                if isinstance(engine, ProbingEngine):
                    engine.probe()
            except Exception as error:
                return error
            finally:
                self._in_hand = None
            return None

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @property
    def in_hand(self) -> str | None:
        """What the device thread is inside now ("job <id>", "jobs <id>, <id>", "a render"
        with no id, "its warm-up", "its probe"), or None while it waits for work: a stop that
        cannot wait any longer for the thread says what it left there."""
        return self._in_hand

    @property
    def loading(self) -> str | None:
        """What the device thread loads now with no render in hand: "its engine" (at its
        warm-up or probe: torch imported, the models scanned) or "model <name>" (a warm-up's),
        else None: it waits for work, runs a step (a warm-up's, a probe's computation) or
        renders (a job's model load is the job's). A stop that cannot wait for the thread
        tells a load, which a restart only starts again, from a step in a hung kernel."""
        if self._in_hand is None or self._rendering:
            return None
        if self._building:
            return "its engine"
        engine = self._engine
        if isinstance(engine, LoadingEngine) and (model := engine.loading) is not None:
            return f"model {model}"
        return None

    @property
    def building(self) -> bool:
        """Whether the device thread builds its engine now for no job (at its warm-up or
        probe: torch imported, the models scanned): a stop need not wait for that."""
        return self._building and not self._rendering

    def _built(self) -> RenderEngine:
        """This device's engine, built on first use (on the device thread)."""
        if self._engine is None:
            self._building = True
            try:
                self._engine = self._engine_factory(self.device)
            finally:
                self._building = False
        return self._engine

    async def _on_thread(
        self,
        work: Callable[[RenderEngine, ProgressCallback | None], _T],
        progress: Callable[[StepProgress], None] | None,
        in_hand: str,
    ) -> _T:
        loop = asyncio.get_running_loop()
        thread_progress: ProgressCallback | None = None
        if progress is not None:
            report = progress

            def thread_progress(step: StepProgress) -> None:
                # Called on the device thread: hand the report to the event loop.
                loop.call_soon_threadsafe(report, step)

        def run() -> _T:
            # In this order: ``loading`` never sees a render's work without its flag.
            self._rendering = True
            self._in_hand = in_hand
            try:
                return work(self._built(), thread_progress)
            finally:
                self._in_hand = None
                self._rendering = False

        return await loop.run_in_executor(self._executor, run)

    def close(self, *, wait: bool = True) -> None:
        """Stop a running warm-up, wait for the running render (if any), stop the thread.
        ``wait=False``: the thread ends once what it is inside ends, not waited for.

        A render step that never returns (a hung kernel) holds this, and the thread, for
        good: ``bot.app.run`` then ends the process without them once the database is
        closed, as a thread pool's threads are otherwise joined at the interpreter's exit."""
        self._closing.set()
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._preparer.shutdown(wait=wait, cancel_futures=True)


def _in_hand(job_ids: Sequence[str]) -> str:
    if not job_ids:
        return "a render"
    return f"job{'s' if len(job_ids) > 1 else ''} {', '.join(job_ids)}"
