"""A batch's start reads and marks its jobs in at most two statements, however many jobs it
holds; real SQLite (its trace callback sees every statement, with its values)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from bot.jobs.queue import FinishedJob, JobQueue, Submission
from db import jobs as journal
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD = 5


class NotesStatementsAtRender(InstantEngine):
    """Keeps a copy of the statements traced so far when its batch render starts."""

    def __init__(self, traced: list[str]) -> None:
        super().__init__()
        self._traced = traced
        self.before_render: list[str] = []

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: object = None,
    ) -> list[list[RenderedImage]]:
        self.before_render = list(self._traced)
        return super().render_batch(requests, progress, None)


async def test_a_batch_of_four_starts_with_at_most_two_statements_on_its_jobs(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    traced: list[str] = []
    engine = NotesStatementsAtRender(traced)
    slots = [DeviceWorker("cpu", lambda _: engine)]
    # Journaled before the queue starts: its device is handed all four as one batch.
    journaling = JobQueue(conn, slots, tmp_path / "images")
    ids = [
        await journaling.submit(
            Submission("imagine", RenderRequest(f"job {n}", seed=n, steps=2), n, GUILD)
        )
        for n in range(4)
    ]
    raw: sqlite3.Connection = conn._conn  # type: ignore[attr-defined]
    await conn._execute(raw.set_trace_callback, traced.append)  # type: ignore[attr-defined]
    queue = JobQueue(conn, slots, tmp_path / "images")
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(4)
    finally:
        await queue.stop()
        await conn._execute(raw.set_trace_callback, None)  # type: ignore[attr-defined]
    assert engine.batches == [4]
    on_the_batch = [sql for sql in engine.before_render if any(id_ in sql for id_ in ids)]
    assert 1 <= len(_statements(on_the_batch)) <= 2, on_the_batch


def _statements(traced: list[str]) -> list[str]:
    """Python traces each row's trigger program (the run mark's count of ended jobs) as its
    outer statement again: a statement repeated back to back ran once."""
    return [sql for n, sql in enumerate(traced) if n == 0 or traced[n - 1] != sql]


async def test_marking_running_returns_exactly_the_jobs_it_marked_in_their_order(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """One cancelled (or erased) before its start is neither marked nor returned."""
    queue = JobQueue(conn, [], tmp_path / "images")
    first, cancelled, last = [
        await queue.submit(Submission("imagine", RenderRequest(f"job {n}"), n, GUILD))
        for n in range(3)
    ]
    await journal.mark_failed(conn, cancelled, "cancelled", time.time(), cancelled=True)
    marked = await journal.mark_running(conn, [last, "no such job", cancelled, first], 1.0)
    assert [(job.id, job.status, job.attempts) for job in marked] == [
        (last, journal.JobStatus.RUNNING, 1),
        (first, journal.JobStatus.RUNNING, 1),
    ]
    record = await journal.get_job(conn, cancelled)
    assert record is not None and record.status is journal.JobStatus.CANCELLED
    assert await journal.mark_running(conn, [first], 2.0) == []


class StartsAll:
    """A start gate that lets every job render, noting what it was asked about."""

    def __init__(self) -> None:
        self.asked: list[FinishedJob] = []

    def start_waits_for(self, job_id: str, user_id: int, guild_id: int | None) -> None:
        return None

    async def why_not_started(self, job: FinishedJob) -> str | None:
        self.asked.append(job)
        return None


async def test_the_start_gate_is_given_no_recorded_posts_and_the_delivery_is(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A job's recorded posts (``FinishedJob.posted_ids``) are its delivery's to read: the
    start gate needs none, and its check reads none (one query per start saved)."""
    traced: list[str] = []
    engine = NotesStatementsAtRender(traced)
    slots = [DeviceWorker("cpu", lambda _: engine)]
    job_id = await JobQueue(conn, slots, tmp_path / "images").submit(
        Submission("imagine", RenderRequest("a barn", steps=2), 7, GUILD, channel_id=9)
    )
    queue = JobQueue(conn, slots, tmp_path / "images")
    await journal.record_job_message(conn, job_id, 1234, posted_in=(GUILD, 9))
    raw: sqlite3.Connection = conn._conn  # type: ignore[attr-defined]
    await conn._execute(raw.set_trace_callback, traced.append)  # type: ignore[attr-defined]
    sink, gate = RecordingSink(), StartsAll()
    queue.set_sink(sink)
    queue.set_start_gate(gate)
    await queue.start()
    try:
        await sink.wait_for(1)
    finally:
        await queue.stop()
        await conn._execute(raw.set_trace_callback, None)  # type: ignore[attr-defined]
    assert [job.posted_ids for job in gate.asked] == [()]
    assert not [sql for sql in engine.before_render if "job_messages" in sql]
    assert sink.delivered[0].posted_ids == (1234,)
