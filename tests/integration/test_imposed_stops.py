"""Stops imposed on a job's owner (a ban's, a withdrawal's) and the cancels kept for the sweep,
on real SQLite files: an imposed stop that meets its owner's own cancel of the job ends it
though that cancel's write is refused, and its owner is told it stops when the ban stopped it
while the owner's stop's ask was refused; a kept cancel whose ask was refused has it written
before its end, so a process killed between the two still ends the job at its next start;
and a delivery given up for a job with no result lets its sink drop what it kept for a try.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import discord
import pytest

from bot.jobs import accounting
from bot.jobs.queue import CancelOutcome, FinishedJob, JobQueue, Submission
from bot.jobs.queue import ends as ends_module
from cogs.results.posting import DiscordResults
from cogs.results.progress import _Watched
from db import jobs as journal
from db.database import connect
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.integration.test_job_end_written import (
    ledger_kinds,
    refused_end,
    status,
    submission,
    sweeping_queue,
)
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

OWNER = accounting.Member(1, 1)


def refuse_the_owner_s_end(
    monkeypatch: pytest.MonkeyPatch, before_refused: Callable[[], Awaitable[object]]
) -> asyncio.Event:
    """The first end written (the owner's cancel's, tried for minutes against a busy database)
    is refused once ``before_refused`` returns; the ends after it are written. Returns an event
    set as that first write starts."""
    record_failure = ends_module.JobEnds.record_failure
    writing = asyncio.Event()

    async def refused_first(
        ends: ends_module.JobEnds, failed_id: str, error: str, **kwargs: Any
    ) -> None:
        if writing.is_set():
            return await record_failure(ends, failed_id, error, **kwargs)
        writing.set()
        await before_refused()
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(ends_module.JobEnds, "record_failure", refused_first)
    return writing


Banning = Callable[[JobQueue, str, asyncio.TaskGroup], Awaitable["asyncio.Task[CancelOutcome]"]]


async def _ended_once_though_refused(
    conn: aiosqlite.Connection, images: Path, ban: Banning
) -> None:
    """``ban`` starts the owner's cancel of a queued job (its end refused:
    ``refuse_the_owner_s_end``), imposes a stop on them meanwhile, and returns the owner's
    cancel: the job ends all the same, refunded, its owner told once, not queued again to be
    rendered and withheld unrefunded."""
    queue = JobQueue(conn, [], images)  # no device: the job stays queued
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        async with asyncio.TaskGroup() as tasks:
            clicked = await ban(queue, job_id, tasks)
            assert await asyncio.wait_for(clicked, 10) is CancelOutcome.CANCELLED
            await sink.wait_for(1)
            assert queue.queued_count() == 0
    finally:
        await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    assert await status(conn, job_id) is journal.JobStatus.CANCELLED
    assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]


async def _banned(conn: aiosqlite.Connection, job_id: str, stop: Awaitable[CancelOutcome]) -> None:
    """The ban's ``stop`` is answered as the owner's cancel's (``BEING_CANCELLED``: not the
    ban's doing, for its audit), its ask in the journal before the owner's write ends: a
    start ends the job whatever this process manages."""
    assert await asyncio.wait_for(stop, 10) is CancelOutcome.BEING_CANCELLED
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.cancel_asked_at is not None


async def test_a_ban_meeting_its_owner_s_cancel_ends_the_job_though_that_cancel_is_refused(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    banned = asyncio.Event()
    writing = refuse_the_owner_s_end(monkeypatch, banned.wait)

    async def ban(
        queue: JobQueue, job_id: str, tasks: asyncio.TaskGroup
    ) -> asyncio.Task[CancelOutcome]:
        clicked = tasks.create_task(queue.cancel(job_id, OWNER))
        try:
            await asyncio.wait_for(writing.wait(), 10)
            await _banned(conn, job_id, queue.cancel(job_id, OWNER, imposed=True))
        finally:
            banned.set()
        return clicked

    await _ended_once_though_refused(conn, tmp_path / "images", ban)


async def test_a_ban_waiting_for_the_queue_s_lock_behind_its_owner_s_cancel_is_not_told_finished(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    banned = asyncio.Event()
    writing = refuse_the_owner_s_end(monkeypatch, banned.wait)
    get_job = journal.get_job
    read_by: dict[asyncio.Task[Any] | None, asyncio.Event] = {}

    async def read(*args: Any, **kwargs: Any) -> journal.JobRecord | None:
        found = await get_job(*args, **kwargs)
        if (read := read_by.get(asyncio.current_task())) is not None:
            read.set()  # its cancel goes on to the queue's lock without another await
        return found

    monkeypatch.setattr(journal, "get_job", read)

    async def read_then_cancelled(
        queue: JobQueue, job_id: str, tasks: asyncio.TaskGroup, *, imposed: bool
    ) -> asyncio.Task[CancelOutcome]:
        task = tasks.create_task(queue.cancel(job_id, OWNER, imposed=imposed))
        read_by[task] = asyncio.Event()
        await asyncio.wait_for(read_by[task].wait(), 10)
        return task

    async def ban(
        queue: JobQueue, job_id: str, tasks: asyncio.TaskGroup
    ) -> asyncio.Task[CancelOutcome]:
        # A dispatcher woken by the ban's other cancels holds the lock: the owner's cancel
        # waits for it first, then the ban's, which found no other cancel being written.
        await queue._wakeup.acquire()
        try:
            clicked = await read_then_cancelled(queue, job_id, tasks, imposed=False)
            imposed = await read_then_cancelled(queue, job_id, tasks, imposed=True)
        finally:
            queue._wakeup.release()
        try:
            await asyncio.wait_for(writing.wait(), 10)  # the owner's took it from the queue
            await _banned(conn, job_id, imposed)
        finally:
            banned.set()
        return clicked

    await _ended_once_though_refused(conn, tmp_path / "images", ban)


async def test_a_ban_while_its_owner_s_refused_cancel_waits_to_queue_the_job_again_ends_it(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("was not recorded")
    lock_taken = asyncio.Event()

    async def ban(
        queue: JobQueue, job_id: str, tasks: asyncio.TaskGroup
    ) -> asyncio.Task[CancelOutcome]:
        async def lock_taken_meanwhile() -> None:
            # A dispatcher woken by the ban's other cancels holds the lock as the owner's
            # write is refused: the owner's cancel waits for it to queue the job again.
            await queue._wakeup.acquire()
            lock_taken.set()

        refuse_the_owner_s_end(monkeypatch, lock_taken_meanwhile)
        clicked = tasks.create_task(queue.cancel(job_id, OWNER))
        try:
            await asyncio.wait_for(lock_taken.wait(), 10)
            await _banned(conn, job_id, queue.cancel(job_id, OWNER, imposed=True))
        finally:
            if lock_taken.is_set():
                queue._wakeup.release()
        return clicked

    await _ended_once_though_refused(conn, tmp_path / "images", ban)


def released(queue: JobQueue, job_id: str, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the batch ``job_id`` was handed to its device in is released: its render (or
    its stop, or its jobs' renders alone once it failed) ended, and none of it is running."""
    done, release = asyncio.Event(), queue._release

    def releasing(job_ids: Sequence[str]) -> None:
        release(job_ids)
        if job_id in job_ids:
            done.set()

    monkeypatch.setattr(queue, "_release", releasing)
    return done


async def stopped_by_the_owner_and_a_ban(
    queue: JobQueue,
    job_id: str,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[], Awaitable[object]] | None = None,
    before_refused: Callable[[], Awaitable[object]] | None = None,
    owner_answered: asyncio.Event | None = None,
    again_by_the_owner: bool = False,
) -> None:
    """The owner stops their running job; the journal refuses that stop's ask, tried for
    minutes, and meanwhile (after ``meanwhile``) a ban stops the job, its ask written. The
    owner's ask is refused once ``before_refused`` returns (by default: once the job's batch is
    released, as the real tries outlast a stop): both are answered it stops, uncharged, the
    owner not "not cancelled". ``owner_answered`` is set once this returns or raises.
    ``again_by_the_owner``: the second stop is the owner's own second click, not a ban's: both
    are answered it stops, charged."""
    batch_released = released(queue, job_id, monkeypatch)
    banned, asking = asyncio.Event(), asyncio.Event()
    write_ask = ends_module.JobEnds.write_ask

    async def owner_s_refused(ends: ends_module.JobEnds, asked: str, **kwargs: Any) -> None:
        if asking.is_set():  # the ban's
            return await write_ask(ends, asked, **kwargs)
        asking.set()
        await banned.wait()
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(ends_module.JobEnds, "write_ask", owner_s_refused)
    try:
        async with asyncio.TaskGroup() as tasks:
            clicked = tasks.create_task(queue.cancel(job_id, OWNER))
            await asyncio.wait_for(asking.wait(), 10)
            if meanwhile is not None:
                await meanwhile()
            second = queue.cancel(job_id, OWNER, imposed=not again_by_the_owner)
            answer = CancelOutcome.STOPPING if again_by_the_owner else CancelOutcome.STOPPING_FREE
            assert await asyncio.wait_for(second, 10) is answer
            if before_refused is None:
                await asyncio.wait_for(batch_released.wait(), 20)
            else:
                await before_refused()
            banned.set()
            assert await asyncio.wait_for(clicked, 10) is answer
    finally:
        banned.set()
        if owner_answered is not None:
            owner_answered.set()


async def test_a_running_job_a_ban_stopped_while_its_owner_s_ask_was_refused_is_told_stopped(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner stops their running job; the journal refuses that stop's ask, tried for
    minutes, and meanwhile a ban stops the job (its ask tried once): the owner is told it
    stops, uncharged, as it does, not "not cancelled: database busy"."""
    error_logs.expect("its stop's ask was not recorded")
    engine = InstantEngine(seconds=30.0)  # 0.5 s a step: a stop ends it within one
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    stepped = asyncio.Event()
    queue.set_progress_listener(lambda _job_id, _step: stepped.set())
    await queue.start()
    try:
        request = RenderRequest("a barn", seed=1, steps=60)
        job_id = await queue.submit(Submission("imagine", request, user_id=1, guild_id=1))
        await asyncio.wait_for(stepped.wait(), 20)
        await stopped_by_the_owner_and_a_ban(queue, job_id, monkeypatch)
        await sink.wait_for(1)
    finally:
        await queue.stop()
    assert not engine.rendered
    assert [(job.job_id, job.error) for job in sink.delivered] == [(job_id, "cancelled")]
    assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]


class HeldGate:
    """A start gate that lets each job render, once ``opened``; ``reached`` is set as a job
    waits at it (handed to its device, its render not begun)."""

    def __init__(self) -> None:
        self.reached, self.opened = asyncio.Event(), asyncio.Event()

    def start_waits_for(self, job_id: str, user_id: int, guild_id: int | None) -> None:
        return None

    async def why_not_started(self, job: FinishedJob) -> str | None:
        self.reached.set()
        await self.opened.wait()
        return None


async def test_a_job_a_ban_left_out_of_its_render_while_its_owner_s_ask_was_refused_is_told_stopped(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but the job was handed to its device and its render not begun: the ban's stop
    leaves it out of its batch, and the owner's ask is refused while its end is still to be
    written. The owner is told it stops, not "not cancelled: database busy"."""
    error_logs.expect("its stop's ask was not recorded")
    engine = InstantEngine(seconds=30.0)
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    gate = HeldGate()
    queue.set_start_gate(gate)
    end_cancelled = ends_module.JobEnds.end_cancelled
    ending, owner_told = asyncio.Event(), asyncio.Event()

    async def held(ends: ends_module.JobEnds, ended_id: str, *args: Any, **kwargs: Any) -> None:
        ending.set()  # the job left out, its end not written: until the owner is answered
        await owner_told.wait()
        await end_cancelled(ends, ended_id, *args, **kwargs)

    monkeypatch.setattr(ends_module.JobEnds, "end_cancelled", held)

    async def left_out() -> None:
        gate.opened.set()
        await asyncio.wait_for(ending.wait(), 20)

    await queue.start()
    try:
        request = RenderRequest("a barn", seed=1, steps=60)
        job_id = await queue.submit(Submission("imagine", request, user_id=1, guild_id=1))
        await asyncio.wait_for(gate.reached.wait(), 20)
        await stopped_by_the_owner_and_a_ban(
            queue, job_id, monkeypatch, before_refused=left_out, owner_answered=owner_told
        )
        await sink.wait_for(1)
    finally:
        gate.opened.set()
        await queue.stop()
    assert not engine.rendered
    assert [(job.job_id, job.error) for job in sink.delivered] == [(job_id, "cancelled")]
    assert await ledger_kinds(conn, job_id) == ["reserve", "refund"]


SLOW = "a barn"


@dataclass
class FailingBatch(InstantEngine):
    """A batch of several fails once ``fail`` is set (``batch_started`` is set as it starts);
    each of its jobs then renders alone: ``SLOW``'s for ``seconds``, the others' at once."""

    batch_started: threading.Event = field(default_factory=threading.Event)
    fail: threading.Event = field(default_factory=threading.Event)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        if len(requests) > 1:
            self.batch_started.set()
            self.fail.wait(20)
            raise RuntimeError("the batch failed")
        engine = self if requests[0].prompt == SLOW else InstantEngine()
        return InstantEngine.render_batch(engine, requests, progress, cancel)


@pytest.mark.parametrize(
    ("the_second_stop", "the_ban_s_stop"),
    [
        ("a ban's", "under way"),
        ("a ban's", "its end written"),
        ("a ban's", "its end kept"),
        ("the owner's", "its end written"),
    ],
)
async def test_a_job_stopped_alone_after_its_batch_failed_is_told_stopped_to_its_owner(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
    the_second_stop: str,
    the_ban_s_stop: str,
) -> None:
    """As above, but the owner stops their job as its batch renders, and the batch fails
    while their ask waits: the job renders again alone, in a batch of its own, where the ban
    stops it. The owner's ask is refused as that render stops, or once its batch is released,
    its end written or, the journal refusing it too, kept for the sweep. The owner is told it
    stops, not "not cancelled: database busy". Where the second stop is the owner's own second
    click, not a ban's, it is charged, and so is the first click told: it stops, charged."""
    by_the_owner = the_second_stop == "the owner's"
    error_logs.expect("was not recorded")
    owner_told = asyncio.Event()
    record_failure = ends_module.JobEnds.record_failure

    async def refused_until_told(ends: ends_module.JobEnds, *args: Any, **kwargs: Any) -> None:
        if not owner_told.is_set():
            raise aiosqlite.OperationalError("database is locked")
        await record_failure(ends, *args, **kwargs)

    if the_ban_s_stop == "its end kept":
        monkeypatch.setattr(ends_module.JobEnds, "record_failure", refused_until_told)
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)  # journaled before the start: one batch
    job_id = await journaling.submit(
        Submission("imagine", RenderRequest(SLOW, seed=1, steps=60), user_id=1, guild_id=1)
    )
    await journaling.submit(
        Submission("imagine", RenderRequest("a cat", seed=2, steps=60), user_id=2, guild_id=1)
    )
    engine = FailingBatch(seconds=30.0)  # 0.5 s a step: a stop ends it within one
    queue, sink = sweeping_queue(conn, [engine], images)
    alone = asyncio.Event()
    queue.set_progress_listener(lambda stepped, _step: stepped == job_id and alone.set())

    async def rendering_alone() -> None:
        engine.fail.set()
        await asyncio.wait_for(alone.wait(), 20)

    await queue.start()
    try:
        assert await asyncio.to_thread(engine.batch_started.wait, 20)
        await stopped_by_the_owner_and_a_ban(
            queue,
            job_id,
            monkeypatch,
            rendering_alone,
            before_refused=_nothing if the_ban_s_stop == "under way" else None,
            owner_answered=owner_told,
            again_by_the_owner=by_the_owner,
        )
        await sink.wait_for(2)
    finally:
        engine.fail.set()
        await queue.stop()
    assert SLOW not in [request.prompt for request in engine.rendered]
    assert [(job.job_id, job.error) for job in sink.delivered if job.job_id == job_id] == [
        (job_id, "cancelled")
    ]
    ended = "commit" if by_the_owner else "refund"
    assert await ledger_kinds(conn, job_id) == ["reserve", ended]


async def test_a_kept_stop_s_ask_is_written_before_its_end_so_a_kill_between_keeps_it(
    tmp_path: Path, error_logs: ErrorLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    error_logs.expect("was not recorded")
    error_logs.expect("its kept end was not written")
    images = tmp_path / "images"
    conn = await connect(tmp_path / "easel.sqlite3")
    queue, _ = sweeping_queue(conn, [], images)
    job_id = await queue.submit(submission(1))
    # A ban's stop of a queued job: its ask and its end refused, kept only in this process.
    monkeypatch.setattr(journal, "ask_cancel", refused_end)
    monkeypatch.setattr(ends_module.JobEnds, "record_failure", refused_end)
    assert await queue.cancel(job_id, OWNER, imposed=True) is CancelOutcome.CANCELLED
    monkeypatch.undo()

    left = tmp_path / "left-by-the-kill.sqlite3"
    killed = asyncio.Event()

    async def killed_here(*_args: object, **_kwargs: object) -> None:
        # The process is killed as the sweep writes the kept end: the journal as it is now
        # is all its next start finds.
        if not killed.is_set():
            async with aiosqlite.connect(left) as copy:
                await conn.backup(copy)
            killed.set()
        raise RuntimeError("killed before the kept end was written")

    monkeypatch.setattr(ends_module.JobEnds, "record_failure", killed_here)
    await queue.start()
    try:
        await asyncio.wait_for(killed.wait(), 10)
    finally:
        await queue.stop()
        await conn.close()
    monkeypatch.undo()

    restarted = await connect(left)
    renders = InstantEngine()
    try:
        again, sink = await started_queue(
            restarted, [DeviceWorker("cpu", lambda _: renders)], images
        )
        await sink.wait_for(1)
        await again.stop()
        assert renders.rendered == []
        assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
        assert await ledger_kinds(restarted, job_id) == ["reserve", "refund"]
    finally:
        await restarted.close()


async def _nothing() -> None:
    return None


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "its-record-refused"])
async def test_a_progress_message_kept_for_a_retry_goes_once_its_delivery_is_given_up(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
    recorded: bool,
) -> None:
    error_logs.expect("its end could not be posted")
    results = DiscordResults(cast(discord.Client, None))
    missing_permissions = discord.Forbidden(
        cast(Any, SimpleNamespace(status=403, reason="Forbidden")),
        {"code": 50013, "message": "Missing Permissions"},
    )

    async def refused(*_args: object) -> int | None:
        raise missing_permissions  # refused for good: a cancel's notice is given up at once

    monkeypatch.setattr(results, "_posted", refused)
    if not recorded:  # given up all the same, though a sweep may find it and try it again
        error_logs.expect("its notice not posted")
        monkeypatch.setattr(journal, "mark_delivered", refused_end)
    queue = JobQueue(conn, [], tmp_path / "images", journal_retry_waits=())
    queue.set_sink(results)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        results._watched[job_id] = _Watched(
            cast(discord.Webhook, None),
            lambda: True,
            False,
            on_deleted=_nothing,
            on_landed=lambda message: _nothing(),
        )
        assert await queue.cancel(job_id, OWNER) is CancelOutcome.CANCELLED
    finally:
        await queue.stop()
    job = await journal.get_job(conn, job_id)
    assert job is not None and (job.delivered_at is not None) is recorded
    assert job_id not in results._watched


class RefusedForGood(RecordingSink):
    """Discord refuses each post of a result (403: a lost permission); it notes the jobs
    whose delivery is given up (``ForgettingSink``)."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[str] = []
        self.gave_up = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        if job.succeeded:
            raise discord.Forbidden(
                cast(Any, SimpleNamespace(status=403, reason="Forbidden")),
                {"code": 50013, "message": "Missing Permissions"},
            )
        return await super().deliver(job)

    def given_up(self, job_id: str, why: str) -> None:
        self.forgotten.append(job_id)
        self.gave_up.set()


async def test_a_result_delivered_meanwhile_is_given_up_though_not_failed(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("its result cannot be posted")

    async def delivered_meanwhile(*_args: object) -> bool:
        return False  # done and delivered by the time its failure was to be written

    monkeypatch.setattr(journal, "fail_undeliverable", delivered_meanwhile)
    renders = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: renders)], tmp_path / "images")
    sink = RefusedForGood()
    queue.set_sink(sink)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1))
        await asyncio.wait_for(sink.gave_up.wait(), 10)
    finally:
        await queue.stop()
    assert sink.forgotten == [job_id]
    assert sink.delivered == []  # no failure posted in its place
