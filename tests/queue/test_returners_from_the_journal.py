"""A member the scheduler forgot (an idle hour, a restart) comes back after the members who never
started a job: whether they ever started one is the journal's word, read after the defer, so the
scheduler keeps nothing of a member once forgotten (``bot.jobs.scheduler``, rule 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.jobs.scheduler import IDLE_USER_FORGOTTEN_S
from db import history
from db import jobs as journal
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.sinks import RecordingSink, started_queue


def submission(user_id: int, seed: int) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest("a cat", seed=seed, steps=2),
        user_id=user_id,
        channel_id=9,
    )


async def held_queue(
    conn: aiosqlite.Connection, tmp_path: Path, clock: list[float]
) -> tuple[JobQueue, HeldEngine, RecordingSink]:
    """A started queue on ``clock``, rendering on one device with a held engine (let go)."""
    engine = HeldEngine()
    engine.released.set()
    queue = JobQueue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images", clock=lambda: clock[0]
    )
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    return queue, engine, sink


async def test_a_member_back_after_an_idle_hour_goes_after_a_newcomer_who_asked_later(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Through the queue: member 1 renders a job, idles an hour (forgotten) and asks again
    while another member's render holds the device; member 2, who never started a job, asks
    after them and still goes first, as when the scheduler kept every member it saw."""
    clock = [0.0]
    queue, engine, sink = await held_queue(conn, tmp_path, clock)
    with engine:
        await queue.submit(submission(1, seed=1))
        await sink.wait_for(1)
        engine.released.clear()
        engine.started.clear()
        clock[0] = 1.0
        await queue.submit(submission(3, seed=3))  # holds the device from now on
        assert await asyncio.to_thread(engine.started.wait, 10)
        clock[0] = 2.0 + IDLE_USER_FORGOTTEN_S
        back = await queue.submit(submission(1, seed=11))  # forgets member 1 first
        clock[0] += 1.0
        newcomer = await queue.submit(submission(2, seed=2))
        assert [job.job_id for job in queue.snapshot().queued] == [newcomer, back]
        engine.released.set()
        await sink.wait_for(4)
    await queue.stop()
    assert [request.seed for request in engine.rendered] == [1, 3, 2, 11]


async def test_a_restart_replays_members_who_started_a_job_after_newcomers(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A member with a job started before the restart is no newcomer after it: their queued
    job, journaled first, is replayed after a newcomer's."""
    images = tmp_path / "images"
    engine = InstantEngine()
    rendering, sink = await started_queue(conn, [DeviceWorker("cpu", lambda _: engine)], images)
    await rendering.submit(submission(1, seed=1))
    await sink.wait_for(1)
    assert sink.delivered[0].succeeded
    await rendering.stop()
    stopped = JobQueue(conn, [], images)  # journals, renders nothing
    back = await stopped.submit(submission(1, seed=11))
    newcomer = await stopped.submit(submission(2, seed=2))

    queue = JobQueue(conn, [], images)
    await queue.start()
    assert [job.job_id for job in queue.snapshot().queued] == [newcomer, back]
    await queue.stop()


async def test_members_who_started_are_those_with_a_job_started_in_the_journal(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Queued only, ended before any start, or started and queued again as that start did
    not happen: none of these is a start; a job that started is, however it ended."""
    queue = JobQueue(conn, [], tmp_path / "images")
    jobs = [await queue.submit(submission(user, seed=user)) for user in (1, 2, 3, 4)]
    started, _queued_only, ended_unstarted, requeued = jobs
    await journal.mark_running(conn, [started, requeued], 1.0)
    await journal.mark_failed(conn, started, "stopped", 2.0)
    await journal.queue_again(conn, [requeued], attempt_counted=True)
    await journal.mark_failed(conn, ended_unstarted, "cancelled", 2.0, cancelled=True)
    assert await journal.members_who_started(conn, [1, 2, 3, 4, 5]) == {1}
    assert await journal.members_who_started(conn, []) == set()


async def test_a_member_whose_only_start_a_crash_interrupted_is_a_returner_after_the_restart(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The render a crash interrupted was a start: the next start queues the job again with
    its ``started_at`` cleared, and its member still goes after one who asked earlier, as a
    returner, not ahead of them as a newcomer."""
    images = tmp_path / "images"
    stopped = JobQueue(conn, [], images)  # journals, renders nothing
    done_before = await stopped.submit(submission(2, seed=2))
    await journal.mark_running(conn, [done_before], 1.0)
    await journal.mark_failed(conn, done_before, "failed", 2.0)
    returner = await stopped.submit(submission(2, seed=22))
    crashed = await stopped.submit(submission(1, seed=1))
    await journal.mark_running(conn, [crashed], 3.0)  # rendering when the process dies

    queue = JobQueue(conn, [], images)
    await queue.start()  # queues ``crashed`` again, then replays the journal
    order = [job.job_id for job in queue.snapshot().queued]
    await queue.stop()
    record = await journal.get_job(conn, crashed)
    assert record is not None and record.attempts == 1 and record.started_at is None
    assert order == [returner, crashed]


@pytest.mark.parametrize("removed_by", ["forget-me", "retention"])
async def test_a_member_whose_started_jobs_were_removed_comes_back_as_a_newcomer(
    removed_by: str, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """/forget-me or retention deletes the member's jobs, their starts with them: forgotten
    after an idle hour, they come back as a member who never started a job, ahead of a
    returner who asked before them (docs/performance.md, "Members ever seen")."""
    clock = [0.0]
    queue, engine, sink = await held_queue(conn, tmp_path, clock)
    with engine:
        await queue.submit(submission(1, seed=1))
        await sink.wait_for(1)
        clock[0] = 5.0
        await queue.submit(submission(2, seed=2))
        await sink.wait_for(2)
        if removed_by == "forget-me":
            await history.erase_user(conn, 1, asked_at=10.0, counted_since=0.0, anonymise_at=10.0)
        else:  # member 1's job ended at 0, member 2's at 5
            pruned = await history.prune_jobs(conn, finished_before=1.0, at_most=10)
            assert len(pruned.job_ids) == 1
        engine.released.clear()
        engine.started.clear()
        clock[0] = 11.0
        await queue.submit(submission(3, seed=3))  # holds the device from now on
        assert await asyncio.to_thread(engine.started.wait, 10)
        clock[0] = 12.0 + IDLE_USER_FORGOTTEN_S
        returner = await queue.submit(submission(2, seed=22))  # members 1 and 2 forgotten
        clock[0] += 1.0
        erased = await queue.submit(submission(1, seed=11))
        assert [job.job_id for job in queue.snapshot().queued] == [erased, returner]
        engine.released.set()
        await sink.wait_for(5)
    await queue.stop()


async def test_members_who_started_reads_only_started_jobs_on_their_own_index(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A member's queued-and-cancelled jobs (free, and as many as they like) are not read at
    their submit: the statement looks each member up on ``jobs_user_started`` (0029), whose
    rows are only the started jobs."""
    queue = JobQueue(conn, [], tmp_path / "images")
    for seed in range(3):
        job_id = await queue.submit(submission(1, seed=seed))
        await journal.mark_failed(conn, job_id, "cancelled", 1.0, cancelled=True)
    statements: list[str] = []
    await conn.set_trace_callback(statements.append)
    assert await journal.members_who_started(conn, [1]) == set()
    await conn.set_trace_callback(None)
    (statement,) = [text for text in statements if "json_each" in text]
    plan = await conn.execute_fetchall(f"EXPLAIN QUERY PLAN {statement}")
    assert "SEARCH jobs USING INDEX jobs_user_started (user_id=?)" in [row[3] for row in plan]
