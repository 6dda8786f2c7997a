"""How a job's start and end are written to the journal, on real SQLite files.

A write that fails (another connection holds SQLite's write lock past the busy timeout): the
queue tries it again, keeps the job and its pictures meanwhile, strands no batch partner, and
leaves a job whose write never went through for the next start. The busy timeout and the
retry waits are the test's, and nothing waits on the clock: the lock goes when the log says
what it waits for.

A job's end and its quota's settlement (refund or charge) are one transaction, and a start
settles the ended jobs a killed process left with their reservation open (written before
they were one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.jobs import accounting
from bot.jobs.queue import (
    CancelOutcome,
    DeliveryRetries,
    FinishedJob,
    JobQueue,
    Submission,
)
from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue import ends as ends_module
from bot.jobs.queue import job_queue as queue_module
from bot.user_errors import UserError
from db import jobs as journal
from db import quotas as ledger
from db.database import connect, transaction
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.logs import naming, when_logged
from tests.support.sinks import RecordingSink, started_queue
from tests.support.slots import BrokerAwayAtFirst

# How long a write waits for the lock before it fails: short, so the tries are many.
BUSY_TIMEOUT_S = 0.05
# Tries enough to outlast any lock these tests hold (each ends at an event, not a time).
PATIENT = (0.05,) * 400
# Three tries: a lock held through them makes the queue give up.
IMPATIENT = (0.01, 0.01)
NOW = 1_700_000_000.0


class WriteLock:
    """Another writer (an operator's sqlite3 shell, a second process) holding the database's
    write lock until ``release``."""

    def __init__(self, path: Path) -> None:
        self._side = sqlite3.connect(path, isolation_level=None)
        self.held = False
        self.gone = asyncio.Event()

    def take(self) -> None:
        self._side.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self._side.execute("COMMIT")
            self.held = False
            self.gone.set()

    def close(self) -> None:
        self.release()
        self._side.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "easel.sqlite3"


@pytest.fixture
async def impatient(db_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await connect(db_path, busy_timeout_s=BUSY_TIMEOUT_S)
    yield connection
    await connection.close()


@pytest.fixture
def lock(db_path: Path) -> Iterator[WriteLock]:
    side = WriteLock(db_path)
    yield side
    side.close()


def submission(user_id: int) -> Submission:
    return Submission(
        "imagine", RenderRequest("a barn", seed=user_id, steps=2), user_id=user_id, guild_id=1
    )


async def ledger_kinds(conn: aiosqlite.Connection, job_id: str) -> list[str]:
    rows = await conn.execute_fetchall(
        "SELECT kind FROM quota_ledger WHERE job_id = ? ORDER BY rowid", (job_id,)
    )
    return [str(kind) for (kind,) in rows]


async def status(conn: aiosqlite.Connection, job_id: str) -> journal.JobStatus:
    job = await journal.get_job(conn, job_id)
    assert job is not None
    return job.status


def queue_on(
    conn: aiosqlite.Connection, engine: InstantEngine, images: Path, waits: tuple[float, ...]
) -> tuple[JobQueue, RecordingSink]:
    queue = JobQueue(
        conn, [DeviceWorker("cpu", lambda _: engine)], images, journal_retry_waits=waits
    )
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    return queue, sink


async def test_an_end_and_a_start_written_while_the_database_is_locked_go_through_after(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path
) -> None:
    engine = HeldEngine()
    queue, sink = queue_on(impatient, engine, tmp_path / "images", PATIENT)
    await queue.start()
    first = await queue.submit(submission(1))
    assert await asyncio.to_thread(engine.started.wait, 10)
    second = await queue.submit(submission(2))  # waits for the device
    lock.take()
    # Released once the first's end and the second's start have each been refused.
    first_refused, second_refused = asyncio.Event(), asyncio.Event()
    with (
        when_logged(naming(first, logging.WARNING, "its pictures not written"), first_refused.set),
        when_logged(naming(second, logging.WARNING, "their start not written"), second_refused.set),
    ):
        engine.released.set()  # the first ends (its record waits), the second is handed out
        async with asyncio.timeout(20):
            await first_refused.wait()
            await second_refused.wait()
    lock.release()
    await sink.wait_for(2)
    await queue.stop()

    assert [job.succeeded for job in sink.delivered] == [True, True]
    for job_id in (first, second):
        assert await status(impatient, job_id) is journal.JobStatus.DONE
        assert await ledger_kinds(impatient, job_id) == ["reserve", "commit"]
        assert (tmp_path / "images" / job_id / "0.png").is_file()


async def test_an_end_the_database_never_takes_keeps_its_pictures_and_strands_no_partner(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path
) -> None:
    # Journaled by a process that stopped: the next one starts them together, one batch.
    journaling, _ = queue_on(impatient, InstantEngine(), tmp_path / "images", IMPATIENT)
    first = await journaling.submit(submission(1))
    partner = await journaling.submit(submission(2))
    engine = HeldEngine()
    queue, sink = queue_on(impatient, engine, tmp_path / "images", IMPATIENT)
    await queue.start()
    assert await asyncio.to_thread(engine.started.wait, 10)
    lock.take()
    # The lock goes as the queue gives up the first job's end: its partner's is written.
    with when_logged(naming(first, logging.ERROR), lock.release):
        engine.released.set()
        await sink.wait_for(1)
        await queue.stop()

    assert engine.batches == [2]
    assert [job.job_id for job in sink.delivered] == [partner]
    assert await status(impatient, partner) is journal.JobStatus.DONE
    assert await ledger_kinds(impatient, partner) == ["reserve", "commit"]
    # Running still, reserved, its pictures kept: the next start renders it again.
    assert await status(impatient, first) is journal.JobStatus.RUNNING
    assert await ledger_kinds(impatient, first) == ["reserve"]
    assert (tmp_path / "images" / first / "0.png").is_file()

    again, sink = await started_queue(
        impatient, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images"
    )
    await sink.wait_for(1)
    await again.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(first, True)]
    assert await ledger_kinds(impatient, first) == ["reserve", "commit"]


async def test_a_start_the_database_never_takes_leaves_its_job_queued_until_it_does(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path
) -> None:
    engine = HeldEngine()
    queue, sink = queue_on(impatient, engine, tmp_path / "images", IMPATIENT)
    await queue.start()
    await queue.submit(submission(1))
    assert await asyncio.to_thread(engine.started.wait, 10)
    waiting = await queue.submit(submission(2))
    lock.take()
    # The lock goes once the queue gave the second job's start up: it is queued again, and
    # renders once its start is written.
    with when_logged(naming(waiting, logging.ERROR, "queued again"), lock.release):
        engine.released.set()
        await asyncio.wait_for(lock.gone.wait(), 20)
    async with asyncio.timeout(20):
        while waiting not in {job.job_id for job in sink.delivered}:
            await sink.wait_for(len(sink.delivered) + 1)
    await queue.stop()

    assert await status(impatient, waiting) is journal.JobStatus.DONE
    assert await ledger_kinds(impatient, waiting) == ["reserve", "commit"]


async def killed_here(*_args: object, **_kwargs: object) -> None:
    """The process dies at this write: nothing after it is written."""
    raise RuntimeError("killed between the job's end and its ledger row")


async def test_a_start_settles_the_ended_jobs_a_killed_process_left_reserved(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    done, failed, cancelled = [await journaling.submit(submission(user)) for user in (1, 2, 3)]
    # Each killed after its end was journaled, before its ledger row.
    picture = journal.ImageRecord(done, 0, 1, str(tmp_path / "0.png"), "a barn", 64, 64)
    await journal.mark_done(conn, done, [picture], 1.5, NOW)
    await journal.mark_failed(conn, failed, "internal error", NOW)
    await journal.mark_failed(conn, cancelled, "cancelled", NOW, cancelled=True)

    queue, sink = await started_queue(conn, [], tmp_path / "images")
    await sink.wait_for(3)  # delivered as before
    await queue.stop()

    assert await ledger_kinds(conn, done) == ["reserve", "commit"]
    # Charged what it measured (one picture, 1.5 s), not its estimate.
    assert await ledger.usage(conn, 1, 1, since=0.0) == ledger.Usage(images=1, gpu_seconds=1.5)
    for job_id, user in ((failed, 2), (cancelled, 3)):
        assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]
        assert await ledger.usage(conn, user, 1, since=0.0) == ledger.Usage(0, 0.0)


async def test_a_cancel_and_its_refund_are_written_together_or_not_at_all(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = JobQueue(conn, [], tmp_path / "images")
    job_id = await queue.submit(submission(1))
    monkeypatch.setattr(accounting, "refund", killed_here)

    with pytest.raises(RuntimeError, match="killed"):
        await queue.cancel(job_id, accounting.Member(1, 1))

    assert await status(conn, job_id) is journal.JobStatus.QUEUED
    assert await ledger_kinds(conn, job_id) == ["reserve"]


async def test_a_job_s_pictures_and_its_charge_are_written_together_or_not_at_all(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounting, "charge", killed_here)
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images"
    )
    job_id = await queue.submit(submission(1))
    await sink.wait_for(1)
    await queue.stop()

    # Neither its pictures nor its end went in with the charge: it failed, refunded, told so.
    assert [job.succeeded for job in sink.delivered] == [False]
    assert await journal.images_of(conn, job_id) == []
    assert await status(conn, job_id) is journal.JobStatus.FAILED
    assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]
    assert not (tmp_path / "images" / job_id).exists()  # deleted once that was recorded


async def test_a_cancel_the_database_never_takes_leaves_its_job_queued_here_and_says_so(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    queue = JobQueue(impatient, [], tmp_path / "images", journal_retry_waits=IMPATIENT)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        lock.take()
        with pytest.raises(UserError, match=r"not cancelled.*Try again"):
            await queue.cancel(job_id, accounting.Member(1, 1))
        lock.release()
        # Still this process's to render, or to cancel once the database takes it.
        assert queue.queued_count() == 1
        assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.CANCELLED
    finally:
        await queue.stop()
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]


async def test_a_cancel_the_database_never_takes_leaves_a_returner_behind_newcomers(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    """Member 1 started a job before (the journal says so): their job, back in the queue
    after its cancel was refused, still goes after a newcomer's submitted later, though
    member 1 left the scheduler with it meanwhile."""
    error_logs.expect("was not recorded")
    images = tmp_path / "images"
    rendering, sink = await started_queue(
        impatient, [DeviceWorker("cpu", lambda _: InstantEngine())], images
    )
    await rendering.submit(submission(1))
    await sink.wait_for(1)
    await rendering.stop()
    queue = JobQueue(impatient, [], images, journal_retry_waits=IMPATIENT)
    await queue.start()  # a new process: member 1 is no newcomer, by the journal
    try:
        back = await queue.submit(submission(1))
        newcomer = await queue.submit(submission(2))
        lock.take()
        with pytest.raises(UserError, match=r"not cancelled.*Try again"):
            await queue.cancel(back, accounting.Member(1, 1))
        lock.release()
        assert [job.job_id for job in queue.snapshot().queued] == [newcomer, back]
    finally:
        await queue.stop()


class LockingSink(RecordingSink):
    """Its first post fails (Discord unreachable) as another writer takes the database."""

    def __init__(self, conn: aiosqlite.Connection, lock: WriteLock) -> None:
        super().__init__(conn)
        self._lock = lock
        self.tries = 0

    async def deliver(self, job: FinishedJob) -> int | None:
        self.tries += 1
        if self.tries == 1:
            self._lock.take()
            raise ConnectionError("Discord unreachable")
        return await super().deliver(job)


async def test_a_failed_delivery_written_while_the_database_is_locked_is_tried_again(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the sweep's at once
    queue = JobQueue(
        impatient,
        [DeviceWorker("cpu", lambda _: InstantEngine())],
        tmp_path / "images",
        journal_retry_waits=PATIENT,
        delivery_retries=DeliveryRetries(sweep_every_s=0.02, first_wait_s=0.01),
    )
    sink = LockingSink(impatient, lock)
    queue.set_sink(sink)
    await queue.start()
    try:
        # The lock goes once the failed try's record was refused: that record must be
        # written after, or the sweep never tries the job again.
        with when_logged(naming("its failed delivery", logging.WARNING), lock.release):
            job_id = await queue.submit(submission(1))
            await sink.wait_for(1)
    finally:
        await queue.stop()
    assert sink.tries == 2 and [job.job_id for job in sink.delivered] == [job_id]
    job = await journal.get_job(impatient, job_id)
    assert job is not None and job.delivered_at is not None


def sweeping_queue(
    conn: aiosqlite.Connection,
    engines: list[InstantEngine],
    images: Path,
    sweep_every_s: float = 0.02,
) -> tuple[JobQueue, RecordingSink]:
    """A queue that gives up a write at once and sweeps every ``sweep_every_s``, on one
    device per engine (none: a queued job stays queued)."""
    queue = JobQueue(
        conn,
        [
            DeviceWorker(f"cpu{index}", lambda _, engine=engine: engine)
            for index, engine in enumerate(engines)
        ],
        images,
        journal_retry_waits=IMPATIENT,
        delivery_retries=DeliveryRetries(sweep_every_s=sweep_every_s, first_wait_s=0.01),
    )
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    return queue, sink


async def test_a_stop_the_database_refuses_is_written_by_the_sweep_not_left_to_the_next_start(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    engine = HeldEngine()
    queue, sink = sweeping_queue(impatient, [engine], tmp_path / "images")
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        # The member is told it stops, its stop asked in the journal; then the database is
        # taken, and the lock goes once its end was refused.
        with when_logged(naming(job_id, logging.CRITICAL, "was not recorded"), lock.release):
            assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.STOPPING
            lock.take()  # before the render's stop is handled: no await since the answer
            await sink.wait_for(1)
    finally:
        await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    # Ended here, charged its GPU time: the next start has nothing to render.
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, job_id) == ["reserve", "commit"]


async def test_a_recorded_cancel_whose_notice_is_refused_answers_cancelled_and_posts_later(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    error_logs: ErrorLogs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    error_logs.expect("its notice not posted")
    caplog.set_level(logging.INFO, "bot.jobs.queue")  # "refunded" is logged at INFO
    queue, sink = sweeping_queue(impatient, [], tmp_path / "images")
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        # The database is taken as the cancel's end and refund are written: its notice's
        # records are refused, and the lock goes once that was logged.
        with (
            when_logged(naming(job_id, logging.INFO, "refunded"), lock.take),
            when_logged(naming(job_id, logging.ERROR, "its notice not posted"), lock.release),
        ):
            assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.CANCELLED
        await sink.wait_for(1)
    finally:
        await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]


async def test_a_second_cancel_while_the_first_is_written_is_told_so_not_that_it_ended(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path
) -> None:
    queue = JobQueue(impatient, [], tmp_path / "images", journal_retry_waits=PATIENT)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        lock.take()
        refused = asyncio.Event()
        with when_logged(naming(job_id, logging.WARNING, "its end not written"), refused.set):
            first = asyncio.create_task(queue.cancel(job_id, accounting.Member(1, 1)))
            await asyncio.wait_for(refused.wait(), 20)
            with pytest.raises(UserError, match="being cancelled"):
                await queue.cancel(job_id, accounting.Member(1, 1))
        lock.release()
        assert await first is CancelOutcome.CANCELLED
    finally:
        await queue.stop()
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]


async def test_a_stop_kept_for_the_sweep_is_ended_by_the_next_start_not_rendered(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    engine = HeldEngine()
    queue, _ = sweeping_queue(impatient, [engine], tmp_path / "images", sweep_every_s=3600)
    await queue.start()
    job_id = await queue.submit(submission(1))
    assert await asyncio.to_thread(engine.started.wait, 10)
    refused = asyncio.Event()
    with when_logged(naming(job_id, logging.CRITICAL, "was not recorded"), refused.set):
        assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.STOPPING
        lock.take()  # before the render's stop is handled: no await since the answer
        await asyncio.wait_for(refused.wait(), 10)
    # Stopped, its end kept: asked again, it is stopping still, not finished.
    assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.STOPPING
    lock.release()
    await queue.stop()  # before any sweep wrote its end

    renders = InstantEngine()
    again, sink = await started_queue(
        impatient, [DeviceWorker("cpu", lambda _: renders)], tmp_path / "images"
    )
    await sink.wait_for(1)
    await again.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert renders.rendered == []
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]


async def test_a_stop_the_database_refuses_to_record_is_not_made_and_the_member_told(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    engine = HeldEngine()
    queue, sink = sweeping_queue(impatient, [engine], tmp_path / "images", sweep_every_s=3600)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        lock.take()
        with pytest.raises(UserError, match=r"not cancelled.*Try again"):
            await queue.cancel(job_id, accounting.Member(1, 1))
        lock.release()
        engine.released.set()
        await sink.wait_for(1)
    finally:
        await queue.stop()
    # Not stopped, as the member was told: rendered, delivered and charged.
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
    assert await ledger_kinds(impatient, job_id) == ["reserve", "commit"]


@dataclass
class DeafEngine(HeldEngine):
    """Finishes each render it holds whatever a cancel (one during the last step or the
    decode)."""

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        return super().render_batch(requests, progress, None)


async def test_a_stop_as_the_render_completes_whose_end_is_refused_is_written_by_the_sweep(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    engine = DeafEngine()
    queue, sink = sweeping_queue(impatient, [engine], tmp_path / "images")
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        assert await queue.cancel(job_id, accounting.Member(1, 1)) is CancelOutcome.STOPPING
        lock.take()
        # Rendered whole all the same; the lock goes once its end was refused.
        with when_logged(naming(job_id, logging.CRITICAL, "was not recorded"), lock.release):
            engine.released.set()
            await sink.wait_for(1)
    finally:
        await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, job_id) == ["reserve", "commit"]  # its GPU time


async def test_a_start_that_did_not_happen_whose_requeue_is_refused_renders_once_it_answers(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    monkeypatch.setattr(queue_module, "UNAVAILABLE_PROBE_WAITS_S", (0.01, 0.01))
    slot = BrokerAwayAtFirst(InstantEngine(), away=lock.take)  # as another writer takes it
    queue = JobQueue(impatient, [slot], tmp_path / "images", journal_retry_waits=IMPATIENT)
    sink = RecordingSink(impatient)
    queue.set_sink(sink)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        # The lock goes once its "queued again" was refused: the journal says running.
        with when_logged(naming(job_id, logging.CRITICAL, "was not recorded"), lock.release):
            await sink.wait_for(1)
    finally:
        await queue.stop()
    assert len(slot.hand_overs) == 2
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
    assert await ledger_kinds(impatient, job_id) == ["reserve", "commit"]


async def test_a_withdrawal_stops_the_jobs_after_one_whose_cancel_is_busy(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    queue = JobQueue(
        impatient,
        [],
        tmp_path / "images",
        journal_retry_waits=PATIENT,
        delivery_retries=DeliveryRetries(sweep_every_s=0.02, first_wait_s=0.01),
    )
    sink = RecordingSink(impatient)
    queue.set_sink(sink)
    await queue.start()
    try:
        busy, other = [await queue.submit(submission(user)) for user in (1, 2)]
        lock.take()
        refused = asyncio.Event()
        with when_logged(naming(busy, logging.WARNING, "its end not written"), refused.set):
            cancelling = asyncio.create_task(queue.cancel(busy, accounting.Member(1, 1)))
            await asyncio.wait_for(refused.wait(), 20)
        # ``busy`` is being cancelled: its stop's ask is tried once, and ``other`` is stopped
        # all the same, its end tried once while the lock is held (the patient waits would
        # outlast the timeout), and kept for the sweep.
        stopped = await asyncio.wait_for(queue.stop_withdrawn([busy, other]), 20)
        assert stopped == [busy, other]
        lock.release()
        assert await cancelling is CancelOutcome.CANCELLED
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert await status(impatient, other) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, other) == ["reserve", "refund"]


async def test_a_sweep_tries_the_stops_kept_once_while_the_database_refuses_them(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    engines = [DeafEngine(), DeafEngine()]
    queue, _ = sweeping_queue(impatient, engines, tmp_path / "images")
    writes = 0  # the ends' transactions tried
    sweeps: list[int] = []  # the ends' writes tried before each sweep's deliveries
    swept = asyncio.Event()
    deliveries_due = journal.deliveries_due

    def counted_end(conn: aiosqlite.Connection) -> contextlib.AbstractAsyncContextManager[None]:
        nonlocal writes
        writes += 1
        return transaction(conn)

    async def counted_sweep(*args: Any) -> list[journal.JobRecord]:
        sweeps.append(writes)
        swept.set()
        return await deliveries_due(*args)

    monkeypatch.setattr(ends_module, "transaction", counted_end)
    monkeypatch.setattr(journal, "deliveries_due", counted_sweep)
    await queue.start()
    try:
        jobs = {user: await queue.submit(submission(user)) for user in (1, 2)}
        for engine in engines:
            assert await asyncio.to_thread(engine.started.wait, 10)
        for user, job_id in jobs.items():
            stopping = await queue.cancel(job_id, accounting.Member(user, 1))
            assert stopping is CancelOutcome.STOPPING
        lock.take()
        # Both render whole, and both ends are refused and kept, the lock held on.
        kept = {job_id: asyncio.Event() for job_id in jobs.values()}
        with contextlib.ExitStack() as watching:
            for job_id, refused in kept.items():
                matches = naming(job_id, logging.CRITICAL, "was not recorded")
                watching.enter_context(when_logged(matches, refused.set))
            for engine in engines:
                engine.released.set()
            async with asyncio.timeout(10):
                for refused in kept.values():
                    await refused.wait()
        since = len(sweeps)
        async with asyncio.timeout(10):
            while len(sweeps) < since + 3:
                swept.clear()
                await swept.wait()
    finally:
        lock.release()
        await queue.stop()
    # Each sweep tries one of the two, and no more while the database refuses it.
    tried = [after - before for before, after in itertools.pairwise(sweeps[since:])]
    assert tried[:2] == [1, 1]


async def test_a_stop_imposed_on_its_owner_is_made_though_its_ask_is_refused(
    impatient: aiosqlite.Connection, lock: WriteLock, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("was not recorded")
    engine = HeldEngine()
    queue = JobQueue(
        impatient,
        [DeviceWorker("cpu", lambda _: engine)],
        tmp_path / "images",
        journal_retry_waits=PATIENT,
    )
    sink = RecordingSink(impatient)
    queue.set_sink(sink)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        lock.take()
        # A ban's stop: its ask tried once (the patient waits would outlast the timeout),
        # and the render stopped though the journal refused it; the lock goes after.
        asked = naming(job_id, logging.CRITICAL, "its stop's ask was not recorded")
        with when_logged(asked, lock.release):
            imposed = queue.cancel(job_id, accounting.Member(1, 1), imposed=True)
            assert await asyncio.wait_for(imposed, 20) is CancelOutcome.STOPPING_FREE
        await sink.wait_for(1)
    finally:
        await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]


async def refused_end(*_args: object, **_kwargs: object) -> None:
    raise aiosqlite.OperationalError("database is locked")


async def test_a_queued_job_s_imposed_stop_whose_end_is_refused_is_ended_by_the_next_start(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    queue = JobQueue(conn, [], tmp_path / "images")
    job_id = await queue.submit(submission(1))
    monkeypatch.setattr(ends_module.JobEnds, "record_failure", refused_end)
    # A ban's stop: its end refused, kept only in this process, which stops before a sweep.
    imposed = await queue.cancel(job_id, accounting.Member(1, 1), imposed=True)
    assert imposed is CancelOutcome.CANCELLED
    monkeypatch.undo()

    renders = InstantEngine()
    again, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: renders)], tmp_path / "images"
    )
    await sink.wait_for(1)
    await again.stop()
    assert renders.rendered == []
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]


async def test_a_stop_asked_as_another_stop_ends_the_job_is_answered_stopping_not_finished(
    impatient: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = HeldEngine()
    queue, sink = sweeping_queue(impatient, [engine], tmp_path / "images")
    ask_stop, release = queue._cancels._ask_stop, queue._release
    asked, recorded, released = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_ask(job_id: str, *, imposed: bool, **batch: Any) -> bool:
        if not imposed:  # the owner's click: its ask is written as a ban's stop ends the job
            asked.set()
            await recorded.wait()
        return await ask_stop(job_id, imposed=imposed, **batch)

    def released_too(job_ids: Sequence[str]) -> None:
        release(job_ids)
        released.set()  # its batch ended: the job is not running here any more

    monkeypatch.setattr(queue._cancels, "_ask_stop", slow_ask)
    monkeypatch.setattr(queue, "_release", released_too)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        clicked = asyncio.create_task(queue.cancel(job_id, accounting.Member(1, 1)))
        await asyncio.wait_for(asked.wait(), 10)
        banned = queue.cancel(job_id, accounting.Member(1, 1), imposed=True)
        assert await banned is CancelOutcome.STOPPING_FREE
        await sink.wait_for(1)
        await asyncio.wait_for(released.wait(), 10)
        recorded.set()
        assert await clicked is CancelOutcome.STOPPING_FREE
    finally:
        await queue.stop()
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED


async def test_a_stop_s_ask_commits_though_another_transaction_open_then_rolls_back(
    impatient: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = HeldEngine()
    queue, _ = sweeping_queue(impatient, [engine], tmp_path / "images")
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        opened, failing = asyncio.Event(), asyncio.Event()

        async def rolled_back() -> None:
            with contextlib.suppress(RuntimeError):
                async with transaction(impatient):
                    opened.set()
                    await failing.wait()
                    raise RuntimeError("another coroutine's transaction fails")

        other = asyncio.create_task(rolled_back())
        await opened.wait()
        cancelling = asyncio.create_task(queue.cancel(job_id, accounting.Member(1, 1)))
        # A lone statement would run inside the open transaction meanwhile; the ask waits.
        await asyncio.wait({cancelling}, timeout=1)
        failing.set()
        await other
        assert await cancelling is CancelOutcome.STOPPING
        job = await journal.get_job(impatient, job_id)
        assert job is not None and job.cancel_asked_at is not None
    finally:
        await queue.stop()


async def test_a_stop_asked_as_the_render_finishes_is_forgotten_so_a_start_renders_it(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("its outcome was not recorded")

    async def refused(*_args: object, **_kwargs: object) -> bytes | None:
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(ends_module.JobEnds, "record_success", refused)
    engine = HeldEngine()
    queue = JobQueue(
        impatient,
        [DeviceWorker("cpu", lambda _: engine)],
        tmp_path / "images",
        journal_retry_waits=PATIENT,
    )
    queue.set_sink(RecordingSink(impatient))
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        assert await asyncio.to_thread(engine.started.wait, 10)
        lock.take()
        asking, unrecorded = asyncio.Event(), asyncio.Event()
        with (
            when_logged(naming(job_id, logging.WARNING, "its stop asked not written"), asking.set),
            when_logged(naming(job_id, logging.CRITICAL, "outcome"), unrecorded.set),
        ):
            cancelling = asyncio.create_task(queue.cancel(job_id, accounting.Member(1, 1)))
            await asyncio.wait_for(asking.wait(), 10)
            # It renders whole while its stop's ask waits; its pictures' record is refused.
            engine.released.set()
            await asyncio.wait_for(unrecorded.wait(), 10)
        lock.release()
        assert await cancelling is CancelOutcome.FINISHED
    finally:
        await queue.stop()
    monkeypatch.undo()

    # Told it finished: the next start renders and posts it, not cancels it.
    again, sink = await started_queue(
        impatient, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images"
    )
    await sink.wait_for(1)
    await again.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]


async def job_asked_to_stop(conn: aiosqlite.Connection, images: Path, attempts: int) -> str:
    """A job a previous process left running, started ``attempts`` times, its stop asked."""
    job_id = await JobQueue(conn, [], images).submit(submission(1))
    await journal.mark_running(conn, [job_id], NOW)
    await journal.ask_cancel(conn, job_id, NOW)
    await conn.execute("UPDATE jobs SET attempts = ? WHERE id = ?", (attempts, job_id))
    return job_id


async def test_a_start_tries_each_asked_stop_once_and_leaves_the_refused_to_the_sweep(
    impatient: aiosqlite.Connection,
    lock: WriteLock,
    tmp_path: Path,
    error_logs: ErrorLogs,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    caplog.set_level(logging.INFO, "bot.jobs.queue")  # "requeued" is logged at INFO
    job_id = await job_asked_to_stop(impatient, tmp_path / "images", attempts=1)
    writes = 0  # the ends' transactions tried

    def counted_end(conn: aiosqlite.Connection) -> contextlib.AbstractAsyncContextManager[None]:
        nonlocal writes
        writes += 1
        return transaction(conn)

    monkeypatch.setattr(ends_module, "transaction", counted_end)
    engine = InstantEngine()
    queue = JobQueue(
        impatient,
        [DeviceWorker("cpu", lambda _: engine)],
        tmp_path / "images",
        journal_retry_waits=(0.01,) * 5,
        delivery_retries=DeliveryRetries(sweep_every_s=0.02, first_wait_s=0.01),
    )
    sink = RecordingSink(impatient)
    queue.set_sink(sink)
    # The lock is taken once the job is back in the queue, and goes once the start's one
    # try was refused: the sweep ends it after.
    with (
        when_logged(naming("requeued", logging.INFO), lock.take),
        when_logged(naming(job_id, logging.CRITICAL, "was not recorded"), lock.release),
    ):
        await queue.start()
    try:
        assert lock.gone.is_set() and writes == 1  # refused once, not tried again
        await sink.wait_for(1)
    finally:
        await queue.stop()
    assert engine.rendered == []
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED


async def test_a_stop_asked_of_a_job_at_its_last_attempt_ends_it_cancelled_not_failed(
    impatient: aiosqlite.Connection, tmp_path: Path
) -> None:
    job_id = await job_asked_to_stop(
        impatient, tmp_path / "images", attempts=queue_module.MAX_RENDER_ATTEMPTS
    )
    queue, sink = await started_queue(impatient, [], tmp_path / "images")
    await sink.wait_for(1)
    await queue.stop()
    assert await status(impatient, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(impatient, job_id) == ["reserve", "refund"]
