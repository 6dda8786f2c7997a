"""A job that takes the process down, on two devices: after a start, each job a dead process
was rendering renders with nothing else in flight, so only the culprit runs out of attempts,
never a job that rendered beside it on the other device."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import MAX_RENDER_ATTEMPTS, JobQueue, Submission
from bot.jobs.queue import job_queue as queue_module
from db import jobs as journal
from db.database import connect
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

POISON = "poison"


@dataclass
class CrashingEngine(InstantEngine):
    """The poison prompt's render "ends the process" (``crashed``; it hangs until
    ``released``) once another render is in flight, or after ``beside_wait_s`` without one;
    every render notes the prompts in flight beside it as it starts (``beside``)."""

    beside_wait_s: float = 1.0
    crashed: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    beside: list[tuple[str, ...]] = field(default_factory=list)
    _in_flight: list[str] = field(default_factory=list)
    _another_started: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        prompts = [request.prompt for request in requests]
        with self._lock:
            self.beside.append(tuple(self._in_flight))
            self._in_flight.extend(prompts)
            if POISON not in prompts:
                self._another_started.set()
        try:
            if POISON in prompts:
                self._another_started.wait(self.beside_wait_s)
                self.crashed.set()
                self.released.wait(20)
                raise RuntimeError("the process is gone")
            return super().render_batch(requests, progress, cancel)
        finally:
            with self._lock:
                for prompt in prompts:
                    self._in_flight.remove(prompt)


def submission(prompt: str, user_id: int) -> Submission:
    return Submission("imagine", RenderRequest(prompt, seed=user_id, steps=2), user_id=user_id)


async def delivered(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> bool:
    jobs = [await journal.get_job(conn, job_id) for job_id in job_ids]
    return all(job is not None and job.delivered_at is not None for job in jobs)


async def run_until_crash(
    conn: aiosqlite.Connection,
    engine: CrashingEngine,
    tmp_path: Path,
    start: int,
    job_ids: Sequence[str],
) -> tuple[Path | None, list[tuple[str, ...]]]:
    """Start a queue on two devices until the poison job "ends the process" or every one of
    ``job_ids`` is delivered. Returns the database as a kill at the crash leaves it (a copy
    taken then: what the dying process writes later is not in it; None: no crash), and the
    renders that had another in flight beside them by then."""
    devices = [DeviceWorker(f"cpu-{index}", lambda _: engine) for index in range(2)]
    queue, _ = await started_queue(conn, devices, tmp_path / f"images-{start}")
    async with asyncio.timeout(20):
        while not engine.crashed.is_set() and not await delivered(conn, job_ids):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    overlaps = [beside for beside in engine.beside if beside]
    left = None
    if engine.crashed.is_set():
        left = tmp_path / f"left-by-crash-{start}.sqlite3"
        async with aiosqlite.connect(left) as copy:
            await conn.backup(copy)
    engine.released.set()
    await queue.stop()
    return left, overlaps


# The job submitted first renders first. The quiet job first, its pictures still being
# encoded and stored (its journal entry: running) as its render returns: the poison job must
# wait until its outcome is recorded, or each crash counts the quiet job an attempt too.
@pytest.mark.parametrize(
    ("quiet_first", "encode_seconds"), [(False, 0.0), (True, 0.5)], ids=["poison", "quiet"]
)
async def test_a_poison_job_fails_alone_and_the_job_beside_it_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_first: bool, encode_seconds: float
) -> None:
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_S", 0.05)
    conn = await connect(tmp_path / "easel.sqlite3")
    journaling = JobQueue(conn, [], tmp_path / "images")
    prompts = [(POISON, 1), ("a quiet lake", 2)]
    ids = {
        prompt: await journaling.submit(submission(prompt, user_id))
        for prompt, user_id in (reversed(prompts) if quiet_first else prompts)
    }
    poison, quiet = ids[POISON], ids["a quiet lake"]
    # What a kill leaves while the two devices render the two jobs: two starts, two times
    # (``JobQueue._start_time``; one time would be one batch's, its attempts given back).
    await journal.mark_running(conn, [poison], 0.0)
    await journal.mark_running(conn, [quiet], 1.0)

    crashes, overlaps, rendered = 0, [], []
    try:
        for start in range(MAX_RENDER_ATTEMPTS + 1):
            engine = CrashingEngine(seconds=0.5, encode_seconds=encode_seconds)
            left, beside = await run_until_crash(conn, engine, tmp_path, start, [poison, quiet])
            overlaps += beside
            rendered += [request.prompt for request in engine.rendered]
            if left is None:
                break
            crashes += 1
            await conn.close()
            conn = await connect(left)
        assert crashes == MAX_RENDER_ATTEMPTS - 1  # its first try was the dead process's
        assert overlaps == []  # nothing rendered beside another while jobs were suspects
        assert rendered == ["a quiet lake"]  # rendered once, recorded before any crash
        failed, done = await journal.get_job(conn, poison), await journal.get_job(conn, quiet)
        assert failed is not None and failed.status is journal.JobStatus.FAILED
        assert failed.error is not None and "Easel stopped while rendering it" in failed.error
        assert done is not None and done.status is journal.JobStatus.DONE
    finally:
        await conn.close()
