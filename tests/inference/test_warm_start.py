"""EASEL_WARM_START: when the queue starts, each device thread builds its engine, loads the
default model (or the one the first job recovered from the journal asks for) and renders one
throw-away step, so the first member's job pays neither; and with a compiler, the native
shapes are queued for compiling before any job."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.jobs.queue import JobQueue, Submission
from bot.settings import load_settings
from db.database import connect
from inference.compile import Compiler, compiled_parts
from inference.engine import WARM_UP, Engine
from inference.model_cache import ModelCache
from inference.types import RenderCancelled, RenderRequest
from inference.worker import DeviceWorker, RenderEngine
from tests.inference.conftest import TINY_INPAINTING
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

JOB = RenderRequest("a lighthouse", seed=4, steps=2, width=64, height=64)


class Recorder:
    """What happened, in order: engines built, models read from disk, renders begun."""

    def __init__(self, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.models_dir = models_dir
        read, render = ModelCache._read, Engine.render

        def reading(cache: ModelCache, entry: Any) -> Any:
            self.events.append(f"read {entry.name}")
            return read(cache, entry)

        def rendering(engine: Engine, request: RenderRequest, *args: Any, **kwargs: Any) -> Any:
            self.events.append(f"render {request.prompt!r}")
            return render(engine, request, *args, **kwargs)

        monkeypatch.setattr(ModelCache, "_read", reading)
        monkeypatch.setattr(Engine, "render", rendering)

    def engine(self, device: str) -> RenderEngine:
        self.events.append(f"build {device}")
        return Engine(self.models_dir, device=device)


async def first_job(
    worker: DeviceWorker, tmp_path: Path, recovered: RenderRequest | None = None
) -> None:
    """Start a queue on ``worker``, render one job through it, stop. ``recovered``: the job
    is one the process before left in the journal, queued before the start."""
    conn = await connect(tmp_path / "easel.sqlite3")
    if recovered is not None:  # a queue that is not running journals all the same
        stopped = JobQueue(conn, [], tmp_path / "images")
        await stopped.submit(Submission("imagine", recovered, user_id=1))
    queue = JobQueue(conn, [worker], tmp_path / "images")
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    if recovered is None:
        await queue.submit(Submission("imagine", JOB, user_id=1))
    async with asyncio.timeout(120):
        while not sink.delivered:
            sink.arrived.clear()
            await sink.arrived.wait()
    await queue.stop()
    await conn.close()
    assert [job.succeeded for job in sink.delivered] == [True]


async def test_the_queue_start_loads_the_default_model_before_the_first_job(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(models_dir, monkeypatch)
    await first_job(DeviceWorker("cpu", recorder.engine, warm_start=True), tmp_path)
    # The job found the engine built and its model read: nothing of either after it began.
    assert recorder.events == ["build cpu", "read tiny", "render ''", "render 'a lighthouse'"]


async def test_the_warm_up_loads_the_model_the_first_recovered_job_asks_for(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the default, which that job would have to swap out (on a GPU, two loads)."""
    recorder = Recorder(models_dir, monkeypatch)
    worker = DeviceWorker("cpu", recorder.engine, warm_start=True)
    await first_job(worker, tmp_path, dataclasses.replace(JOB, model=TINY_INPAINTING))
    assert recorder.events == [
        "build cpu",
        f"read {TINY_INPAINTING}",
        "render ''",
        "render 'a lighthouse'",
    ]


def test_a_warm_up_for_a_model_no_longer_installed_loads_the_default(models_dir: Path) -> None:
    engine = Engine(models_dir)
    engine.warm_up(model="removed-since")
    assert list(engine.models.loaded) == ["tiny"]


async def test_without_a_warm_start_the_first_job_builds_the_engine_and_loads_the_model(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(models_dir, monkeypatch)
    await first_job(DeviceWorker("cpu", recorder.engine), tmp_path)
    assert recorder.events == ["build cpu", "render 'a lighthouse'", "read tiny"]


async def test_a_failed_warm_up_is_logged_once_and_the_first_job_still_renders(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    builds: list[str] = []

    def engine_once_the_disk_is_back(device: str) -> RenderEngine:
        builds.append(device)
        if len(builds) == 1:
            raise OSError("the models disk is not mounted yet")
        return Engine(models_dir, device=device)

    with caplog.at_level(logging.WARNING, logger="inference.worker"):
        worker = DeviceWorker("cpu", engine_once_the_disk_is_back, warm_start=True)
        await first_job(worker, tmp_path)
    warnings = [r for r in caplog.records if r.name == "inference.worker"]
    assert [r.getMessage() for r in warnings] == [
        "warm start on cpu failed; the first job loads its model"
    ]
    assert builds == ["cpu", "cpu"]


def test_a_warm_up_without_any_model_raises_for_the_worker_to_log(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(Exception, match="model"):
        Engine(tmp_path / "models").warm_up()


@dataclass
class SlowWarmingEngine(InstantEngine):
    """Its warm-up is a minute of short steps, as a big model's load and first step."""

    seconds: float = 60.0
    started: threading.Event = field(default_factory=threading.Event)

    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None:
        self.started.set()
        self.render(RenderRequest("", steps=600), cancel=cancel)


def test_closing_the_worker_during_its_warm_up_stops_it_at_the_next_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = SlowWarmingEngine()
    worker = DeviceWorker("cpu", lambda _device: engine, warm_start=True)
    with caplog.at_level(logging.INFO, logger="inference.worker"):
        worker.warm_up()
        assert engine.started.wait(10)
        began = time.perf_counter()
        worker.close()
        took = time.perf_counter() - began
    assert took < 5, f"close() waited {took:.1f} s for a warm-up of 60 s"
    assert engine.rendered == []  # stopped, not finished
    worker_logs = [r for r in caplog.records if r.name == "inference.worker"]
    assert [(r.levelno, r.getMessage()) for r in worker_logs] == [
        (logging.INFO, "warm start on cpu stopped: shutting down")
    ]


def test_a_shutdown_during_the_warm_up_load_skips_its_step_and_keeps_the_model(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutdown = threading.Event()
    read, run = ModelCache._read, Engine._run
    steps_run: list[RenderRequest] = []

    def read_then_shut_down(cache: ModelCache, entry: Any) -> Any:
        loaded = read(cache, entry)
        shutdown.set()  # close() while the model loads
        return loaded

    def running(engine: Engine, model: Any, request: RenderRequest, *args: Any) -> Any:
        steps_run.append(request)
        return run(engine, model, request, *args)

    monkeypatch.setattr(ModelCache, "_read", read_then_shut_down)
    monkeypatch.setattr(Engine, "_run", running)
    engine = Engine(models_dir)
    with pytest.raises(RenderCancelled):
        engine.warm_up(shutdown)
    assert steps_run == []
    assert list(engine.models.loaded) == ["tiny"]  # a later start's first job finds it loaded


def test_the_warm_up_queues_the_native_shapes_for_compiling_before_any_job(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[tuple[int, ...]] = []

    class SpyCompiler(Compiler):
        """Records what is queued for compiling, compiles nothing."""

        def enqueue(self, target: Any, keys: Any) -> None:
            queued.extend(key[2][0].shape for key in keys)

    monkeypatch.setattr(torch, "compile", lambda model, **options: model)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # use_disk_cache sets it
    engine = Engine(models_dir, compiler=SpyCompiler(tmp_path / "cache", batch_variants=False))
    engine.warm_up()
    parts = compiled_parts(engine.models.loaded["tiny"].pipeline)
    assert len(parts) == 2
    # The UNet's guided batch of one picture and the VAE decoder's one row, at native size.
    assert queued == [(2, 4, 8, 8), (1, 4, 8, 8)]


def test_warm_start_is_on_for_cuda_devices_only_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = {}
    for value in ("auto", " ON ", "off"):
        monkeypatch.setenv("EASEL_WARM_START", value)
        settings = load_settings(None)
        chosen[value] = [settings.warms_up(d) for d in ("cpu", "cuda:0")]
    assert chosen == {"auto": [False, True], " ON ": [True, True], "off": [False, False]}
    assert WARM_UP.steps == 1 and WARM_UP.count == 1 and WARM_UP.width is None
