"""The in-process queue on a real SQLite file, with an engine that needs no torch.

What must hold for every transport (done, delivered once, refunds, cancel) is tested for the
in-process queue and NATS alike in ``tests/distributed/test_queue_transports.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import FinishedJob, JobQueue, QuotaExceeded, Submission
from bot.jobs.scheduler import PriorityClass
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await connect(tmp_path / "easel.sqlite3")
    yield connection
    await connection.close()


def local_slots(engine: InstantEngine) -> list[DeviceWorker]:
    return [DeviceWorker("cpu", lambda _: engine)]


def make_queue(conn: aiosqlite.Connection, tmp_path: Path, engine: InstantEngine) -> JobQueue:
    return JobQueue(conn, local_slots(engine), tmp_path / "images")


def submission(prompt: str = "a cat", seed: int = 1, count: int = 1) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest(prompt, seed=seed, count=count, steps=2),
        user_id=7,
        channel_id=9,
    )


async def test_engine_failure_is_journaled_and_reported(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue, sink = await started_queue(
        conn, local_slots(InstantEngine(fail_on="boom")), tmp_path / "images"
    )
    job_id = await queue.submit(submission(prompt="boom"))
    await sink.wait_for(1)
    await queue.stop()
    assert not sink.delivered[0].succeeded
    assert sink.delivered[0].error == f"internal error (RuntimeError); reference {job_id}"
    assert job_id in caplog.text  # the log names the job, with its traceback
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.FAILED


async def test_restart_requeues_running_and_delivers_finished(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # A previous process journaled two jobs, started one, and died.
    first = make_queue(conn, tmp_path, InstantEngine())
    running = await first.submit(submission(seed=1))
    waiting = await first.submit(submission(seed=2))
    await journal.mark_running(conn, [running], 0.0)

    engine = InstantEngine()
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(2)
    await queue.stop()
    assert {job.job_id for job in sink.delivered} == {running, waiting}
    assert sorted(request.seed for request in engine.rendered) == [1, 2]
    record = await journal.get_job(conn, running)
    assert record is not None and record.attempts == 2


async def test_failed_delivery_is_retried_at_next_start(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenSink(RecordingSink):
        async def deliver(self, job: FinishedJob) -> int | None:
            self.arrived.set()
            raise ConnectionError("discord is down")

    queue = make_queue(conn, tmp_path, InstantEngine())
    broken = BrokenSink()
    queue.set_sink(broken)
    await queue.start()
    job_id = await queue.submit(submission())
    async with asyncio.timeout(10):
        await broken.arrived.wait()
    await queue.stop()
    assert "delivery failed" in caplog.text

    engine = InstantEngine()
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(1)
    await queue.stop()
    assert sink.delivered[0].job_id == job_id
    assert engine.rendered == []  # delivered from the stored PNGs, not rendered again


async def usage_today(conn: aiosqlite.Connection) -> ledger.Usage:
    return await ledger.usage(conn, 7, 5, period_start(Period.DAY, time.time()))


def guild_submission(prompt: str = "a cat", count: int = 1) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest(prompt, seed=1, count=count, steps=2),
        user_id=7,
        guild_id=5,
    )


async def test_quota_is_reserved_charged_refunded_and_refusal_explains(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await ledger.set_limits(conn, ledger.LimitScope.GUILD, 5, 5, {"images_per_day": 3}, 0.0)
    queue, sink = await started_queue(
        conn, local_slots(InstantEngine(fail_on="boom")), tmp_path / "images"
    )
    await queue.submit(guild_submission(count=2))
    await sink.wait_for(1)
    assert (await usage_today(conn)).images == 2

    await queue.submit(guild_submission(prompt="boom"))
    await sink.wait_for(2)
    assert not sink.delivered[1].succeeded
    assert (await usage_today(conn)).images == 2  # the failed job was refunded

    with pytest.raises(QuotaExceeded, match=r"needs 2 images but you have 1 of 3 left today"):
        await queue.submit(guild_submission(count=2))
    await queue.stop()
    assert (await usage_today(conn)).images == 2
    caplog.clear()


async def test_compatible_jobs_arriving_together_render_as_one_batch(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = InstantEngine(seconds=0.3)
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    # A lone request starts at once; the four that arrive while it renders wait for the device.
    # Same settings but another size: never in the same batch as the cats.
    await queue.submit(
        Submission(
            kind="imagine",
            request=RenderRequest("dog", seed=9, steps=2, width=128, height=128),
            user_id=200,
        )
    )
    for user in range(4):
        await queue.submit(
            Submission(
                kind="imagine",
                request=RenderRequest(f"cat {user}", seed=user, steps=2),
                user_id=100 + user,
            )
        )
    await sink.wait_for(5)
    await queue.stop()
    assert engine.batches == [1, 4]
    dog = next(job for job in sink.delivered if job.request.prompt == "dog")
    assert [image.seed for image in dog.images] == [9]
    cats = {job.request.prompt: job for job in sink.delivered if job.request.prompt != "dog"}
    assert {name: job.images[0].seed for name, job in cats.items()} == {
        f"cat {user}": user for user in range(4)
    }
    charged = [await journal.get_job(conn, job.job_id) for job in cats.values()]
    assert all(record is not None and record.gpu_seconds for record in charged)


async def test_a_restart_keeps_each_queued_jobs_priority(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    first = make_queue(conn, tmp_path, InstantEngine())
    relaxed = await first.submit(
        dataclasses.replace(submission(seed=1), priority=PriorityClass.RELAX)
    )
    urgent = await first.submit(
        dataclasses.replace(submission(seed=2), priority=PriorityClass.PRIORITY)
    )
    engine = InstantEngine()
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(2)
    await queue.stop()
    # Submitted second, but its priority survived the restart: it renders first.
    assert [job.job_id for job in sink.delivered] == [urgent, relaxed]
    assert [request.seed for request in engine.rendered] == [2, 1]
