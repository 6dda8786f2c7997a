"""A device thread says what it is inside (``DeviceWorker.in_hand``): the queue's jobs of
the batch it renders, its warm-up, or nothing; and what it loads with no job on it
(``DeviceWorker.loading``). A stop that cannot wait for a hung step names them, and one left
only loading ends without it at status 0 (``bot.app.run``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission, job_queue
from db import jobs as journal
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support import engines
from tests.support.sinks import RecordingSink

GUILD = 5
WAIT_S = 30


class HeldWarmingEngine(engines.HeldEngine):
    """Renders, and warms up, once ``released``; says meanwhile that it loads ``loading``
    (None: its warm-up is in its step)."""

    loading: str | None = None

    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None:
        self.started.set()
        self.released.wait(WAIT_S)


async def test_a_device_names_the_jobs_of_the_batch_it_renders_and_nothing_once_done(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = HeldWarmingEngine()
    engine.loading = "tiny"  # the batch's model: the job's load is the job's, not the device's
    device = DeviceWorker("cpu", lambda _: engine)
    # Journaled before the queue starts: the device is handed both as one batch.
    ids = [
        await JobQueue(conn, [device], tmp_path / "images").submit(
            Submission("imagine", RenderRequest(f"job {n}", seed=n, steps=2), n, GUILD)
        )
        for n in range(2)
    ]
    queue = JobQueue(conn, [device], tmp_path / "images")
    sink = RecordingSink()
    queue.set_sink(sink)
    assert device.in_hand is None
    await queue.start()
    try:
        assert await asyncio.to_thread(engine.started.wait, WAIT_S)
        assert device.in_hand == f"jobs {ids[0]}, {ids[1]}"
        assert device.loading is None
        engine.released.set()
        await sink.wait_for(2)
    finally:
        engine.released.set()
        await queue.stop()
    assert engine.batches == [2]
    assert device.in_hand is None


@pytest.mark.parametrize(("model", "loading"), [("tiny", "model tiny"), (None, None)])
async def test_a_device_names_its_warm_up_while_it_runs_and_what_it_loads_there(
    model: str | None, loading: str | None
) -> None:
    engine = HeldWarmingEngine()
    engine.loading = model  # None: the warm-up's step runs
    device = DeviceWorker("cpu", lambda _: engine, warm_start=True)
    device.warm_up()
    try:
        assert await asyncio.to_thread(engine.started.wait, WAIT_S)
        assert device.in_hand == "its warm-up"
        assert device.loading == loading
    finally:
        engine.released.set()
        await asyncio.to_thread(device.close)
    assert device.in_hand is None
    assert device.loading is None


async def test_a_device_says_it_loads_its_engine_while_its_probe_builds_it() -> None:
    """The engine's build (torch imported, the models scanned) is a load: a stop that comes
    then (the first probe, at the start) leaves no job and no hung kernel behind."""
    building, built = threading.Event(), threading.Event()

    def build(_device: str) -> engines.InstantEngine:
        building.set()
        built.wait(WAIT_S)
        return engines.InstantEngine()

    device = DeviceWorker("cpu", build)
    probing = asyncio.ensure_future(device.probe())
    try:
        assert await asyncio.to_thread(building.wait, WAIT_S)
        assert device.in_hand == "its probe"
        assert device.loading == "its engine"
    finally:
        built.set()
        assert await probing is None
        await asyncio.to_thread(device.close)
    assert device.loading is None


class HeldProbingEngine(engines.HeldEngine):
    """Answers its probe once ``released``: a device that hangs even at a tiny computation."""

    def probe(self) -> None:
        self.started.set()
        self.released.wait(WAIT_S)


async def test_a_device_names_its_probe_while_it_runs() -> None:
    """A device hung at its probe (the case probing is for) must be named too, or a stop
    that cannot wait for it would not know to end the process anyway."""
    engine = HeldProbingEngine()
    device = DeviceWorker("cpu", lambda _: engine)
    probing = asyncio.ensure_future(device.probe())
    try:
        assert await asyncio.to_thread(engine.started.wait, WAIT_S)
        assert device.in_hand == "its probe"
        assert device.loading is None  # its tiny computation: a step, maybe in a hung kernel
    finally:
        engine.released.set()
        assert await probing is None
        await asyncio.to_thread(device.close)
    assert device.in_hand is None


async def test_a_stop_keeps_the_attempt_of_a_job_whose_device_stays_stuck_in_it_alone(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job may be what hangs its device: given its attempt back at every stop, it would
    come back as new, batched with others, and hang them too, for good."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.05)
    deaf, held = engines.StuckEngine(), engines.HeldEngine()
    stuck, stopped = DeviceWorker("cpu:0", lambda _: deaf), DeviceWorker("cpu:1", lambda _: held)
    queue = JobQueue(conn, [stuck, stopped], tmp_path / "images")
    queue.set_sink(RecordingSink())
    await queue.start()
    try:
        # Steps apart, never one batch: one job on each device, whichever takes it.
        ids = [
            await queue.submit(
                Submission("imagine", RenderRequest(f"job {n}", seed=n, steps=2 + n), n, GUILD)
            )
            for n in range(2)
        ]
        for engine in (deaf, held):
            assert await asyncio.to_thread(engine.started.wait, WAIT_S)
        await queue.stop(deadline=asyncio.get_running_loop().time() + 1.0)
        assert stuck.in_hand is not None and stopped.in_hand is None
        [on_stuck] = [job_id for job_id in ids if stuck.in_hand == f"job {job_id}"]
        attempts = {}
        for job_id in ids:
            record = await journal.get_job(conn, job_id)
            assert record is not None and record.status is journal.JobStatus.RUNNING
            attempts[job_id] = record.attempts
    finally:
        deaf.released.set()
        held.released.set()
        await asyncio.to_thread(stuck.close)
    # Journaled running, both: the next start queues them again; the stuck one alone.
    assert attempts == {job_id: int(job_id == on_stuck) for job_id in ids}
