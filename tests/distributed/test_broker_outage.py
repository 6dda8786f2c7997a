"""The broker down longer than a job's hand-over is tried: the jobs handed out meanwhile are
queued again (not failed), dispatch pauses until the broker answers, and then every job
renders. A real nats-server stopped and started again, its timeouts scaled down."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import nats as nats_client
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import PubAck
from nats.js.object_store import ObjectStore

from bot import metrics
from bot.jobs.broker import wire
from bot.jobs.broker import worker as worker_module
from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.queue import JobQueue, Submission
from bot.jobs.queue import job_queue as queue_module
from db import jobs as journal
from db.database import connect
from inference.types import RenderRequest
from tests.distributed.test_queue_transports import images_used_today, submission
from tests.distributed.transports import NatsTransport
from tests.support import polling
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

until = functools.partial(polling.until, timeout_s=30)  # log records and deliveries


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def events(caplog: pytest.LogCaptureFixture, event: str) -> int:
    """The job log's lines of ``event`` (``bot.logging_setup.job_event``)."""
    return sum(getattr(record, "event", None) == event for record in caplog.records)


def queue_wait_samples() -> float:
    [family] = metrics.QUEUE_WAIT.collect()
    return next(sample.value for sample in family.samples if sample.name.endswith("_count"))


@dataclass
class Bot:
    conn: aiosqlite.Connection
    client: BrokerClient
    queue: JobQueue
    sink: RecordingSink


@contextlib.asynccontextmanager
async def bot_on(
    nats: NatsTransport, tmp_path: Path, slots: int, unreachable_after_s: float
) -> AsyncIterator[Bot]:
    """A started queue with remote slots on ``nats``'s server, its timeouts scaled down."""
    conn = await connect(tmp_path / "easel.sqlite3")
    config = BrokerConfig(
        nats.server.url,
        slots=slots,
        result_recheck_s=0.3,
        unreachable_after_s=unreachable_after_s,
    )
    client = await BrokerClient.open(config)
    queue = JobQueue(conn, client.slots(), tmp_path / "images")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    try:
        yield Bot(conn, client, queue, sink)
    finally:
        await queue.stop()
        await client.close()
        await conn.close()


async def test_a_broker_outage_fails_no_job_and_dispatch_resumes(
    nats: NatsTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.jobs.queue")
    nats.start_worker(InstantEngine(seconds=0.2))
    waits_before = queue_wait_samples()
    async with bot_on(nats, tmp_path, slots=2, unreachable_after_s=1.0) as bot:
        nats.server.stop()
        ids = [
            await bot.queue.submit(
                Submission("imagine", RenderRequest(f"job {n}", seed=n, steps=3), user_id=n)
            )
            for n in range(1, 4)
        ]
        # Each slot hands one job over and fails; then dispatch waits, through one probe that
        # finds the broker still away (or, without the fix, a job is failed and posted).
        await until(
            lambda: (
                (logged(caplog, "still does not answer") and logged(caplog, "not started") == 2)
                or bot.sink.delivered
            )
        )
        delivered_while_away = list(bot.sink.delivered)
        jobs = [await journal.get_job(bot.conn, job_id) for job_id in ids]
        nats.server.start()  # before any assertion: the worker waits for it to stop
        assert delivered_while_away == []
        assert [(job.status, job.attempts) for job in jobs if job] == [
            (journal.JobStatus.QUEUED, 0)
        ] * 3
        await bot.sink.wait_for(3)
        assert all(job.succeeded for job in bot.sink.delivered)
        assert {job.job_id for job in bot.sink.delivered} == set(ids)
        # Handed over again only once the broker answered: no job was tried more than once
        # per slot while it was away.
        assert logged(caplog, "not started: the broker did not answer") == 2
        assert logged(caplog, "dispatch resumed") == 1
        # Each start that did not happen is followed by "requeued"; one wait sample a job.
        assert events(caplog, "requeued") == 2
        assert events(caplog, "started") == 3 + 2
        assert queue_wait_samples() - waits_before == 3


async def test_a_full_jobs_stream_fails_the_job_it_refuses_and_pauses_nothing(
    nats: NatsTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker answers a publish to a full jobs stream (discard new): not an outage."""
    caplog.set_level(logging.INFO, logger="bot.jobs.queue")
    monkeypatch.setattr(wire, "JOBS_MAX_BYTES", 3000)  # room for one of the jobs below
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_S", 0.05)  # the held job is not awaited
    async with bot_on(nats, tmp_path, slots=2, unreachable_after_s=0.5) as bot:
        ids = [
            await bot.queue.submit(
                Submission("imagine", RenderRequest(f"job {n} " + "x" * 1500, seed=n), user_id=n)
            )
            for n in (1, 2)
        ]
        await bot.sink.wait_for(1)  # no worker: the job the stream holds waits there
        [refused] = bot.sink.delivered
        assert not refused.succeeded
        assert "no room for it now" in (refused.error or "")
        [held] = [job_id for job_id in ids if job_id != refused.job_id]
        job = await journal.get_job(bot.conn, held)
        assert job is not None and job.status is journal.JobStatus.RUNNING
        assert logged(caplog, "dispatch paused") == 0


async def test_a_broker_restarted_without_its_store_gets_the_streams_again(
    nats: NatsTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with bot_on(nats, tmp_path, slots=1, unreachable_after_s=0.5) as bot:
        # What a broker restarted without its store holds: no jobs stream.
        other = await nats_client.connect(nats.server.url)
        await other.jetstream().delete_stream(wire.JOBS_STREAM)
        await other.close()
        await bot.queue.submit(Submission("imagine", RenderRequest("a lake", steps=2), user_id=1))
        await until(lambda: logged(caplog, "without Easel's streams"))
        nats.start_worker(InstantEngine())  # it finds the stream and its consumer made again
        await bot.sink.wait_for(1)
        assert [job.succeeded for job in bot.sink.delivered] == [True]
        assert logged(caplog, "dispatch resumed") == 1


async def test_an_outage_while_its_pictures_are_fetched_fails_no_job(
    nats: NatsTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result is stored, its pictures in the object store; the broker does not answer the
    fetch: the job is queued again, and its next try uses the stored result."""
    caplog.set_level(logging.INFO, logger="bot.jobs.queue")
    monkeypatch.setattr(worker_module, "inline_images_budget", lambda _max_payload: 0)
    engine = InstantEngine()
    nats.start_worker(engine)
    async with bot_on(nats, tmp_path, slots=1, unreachable_after_s=0.5) as bot:
        fetch = bot.client._images.get

        async def fetch_once_requeued(name: str) -> ObjectStore.ObjectResult:
            if not logged(caplog, "not started"):
                raise NatsTimeoutError
            return await fetch(name)

        monkeypatch.setattr(bot.client._images, "get", fetch_once_requeued)
        await bot.queue.submit(Submission("imagine", RenderRequest("a lake", steps=2), user_id=1))
        await bot.sink.wait_for(1)
        assert [job.succeeded for job in bot.sink.delivered] == [True]
        assert len(engine.rendered) == 1  # the stored result was used, not rendered again
        assert logged(caplog, "not started: the broker did not answer") == 1


async def test_a_publish_that_landed_with_its_answer_lost_renders_and_charges_once(
    nats: NatsTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's message reached the stream, its acknowledgement did not: the job is queued
    again in the bot, and its next hand-over finds the copy that landed (same message id)."""
    caplog.set_level(logging.INFO, logger="bot.jobs.queue")
    engine = InstantEngine(seconds=0.2)
    nats.start_worker(engine)
    async with bot_on(nats, tmp_path, slots=1, unreachable_after_s=0.5) as bot:
        publish = bot.client._js.publish

        async def publish_answer_lost(subject: str, *args: Any, **kwargs: Any) -> PubAck:
            ack = await publish(subject, *args, **kwargs)  # it lands
            if subject.startswith("easel.jobs.") and not logged(caplog, "not started"):
                raise NatsTimeoutError  # its answer is lost on the way back
            return ack

        monkeypatch.setattr(bot.client._js, "publish", publish_answer_lost)
        await bot.queue.submit(submission(seed=7))
        await bot.sink.wait_for(1)
        await bot.queue.stop()  # what a second copy would post or charge is in by now
        assert logged(caplog, "not started: the broker did not answer") == 1
        assert [job.succeeded for job in bot.sink.delivered] == [True]  # one post
        assert len(engine.rendered) == 1
        assert await images_used_today(bot.conn) == 1  # one charge
