"""Bot and workers of different versions (a rolling upgrade): a worker older than the bot
refuses a job it cannot render as asked (a newer message version, or request fields or options
it does not know) rather than render another picture; the bot fails and refunds it, tells the
member it is a version mismatch on Easel's side and the operator to upgrade the workers. An
older bot's job (no version in it) and a job of this version render. A worker from before tags
(its result untagged) fails its job, refunded. A real nats-server and the real queue."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiosqlite
import nats as nats_client
import pytest

from bot.jobs.broker import wire
from bot.jobs.broker.client import OLDER_WORKER
from bot.jobs.broker.wire import JobMessage, Outcome, ResultMessage, consumer_name, result_subject
from bot.jobs.queue import Submission
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderRequest
from tests.conftest import ErrorLogs
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

MEMBER, SERVER = 7, 5
# How this version writes a job message, kept before a test replaces it.
_WRITTEN = JobMessage.encode


def _sent_as(change: str, message: JobMessage) -> bytes:
    """``message`` as a bot of another version writes it."""
    body = json.loads(_WRITTEN(message))
    if change == "unknown field":  # a newer bot's field, its version left unbumped
        request = json.loads(body["request"])
        request["guidance_rescale"] = 0.7
        body["request"] = json.dumps(request)
    elif change == "unknown option":  # a newer bot's option, its version left unbumped
        request = json.loads(body["request"])
        request["options"]["guidance_rescale"] = 0.7
        body["request"] = json.dumps(request)
    elif change == "no version":  # a bot from before versions
        del body["wire"], body["written"]
    return json.dumps(body).encode()


async def _one_job(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    engine: InstantEngine,
    seed: int = 1,
) -> tuple[str, RecordingSink]:
    """One job through the queue to a worker, until its end is delivered."""
    client = await nats.client()
    nats.start_worker(engine)
    queue, sink = await started_queue(conn, client.slots(), tmp_path / "images")
    request = RenderRequest("a cat", seed=seed, schedule_type="Karras")
    job_id = await queue.submit(Submission("imagine", request, user_id=MEMBER, guild_id=SERVER))
    async with asyncio.timeout(20):
        await sink.wait_for(1)
    await queue.stop()
    return job_id, sink


@pytest.mark.parametrize("newer", ["version", "unknown field", "unknown option"])
async def test_a_worker_older_than_the_bot_refuses_the_job_and_the_member_is_refunded(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
    newer: str,
) -> None:
    if newer == "version":
        # A worker of version 1, and a job only version 2 renders as asked: a seed past 32 bits.
        monkeypatch.setattr(wire, "WIRE_VERSION", wire.WIDE_SEEDS_VERSION - 1)
    else:
        monkeypatch.setattr(JobMessage, "encode", lambda message: _sent_as(newer, message))
    error_logs.expect(r"refused: .*this worker is older than the bot: upgrade workers with")
    error_logs.expect(r"worker \S+ is older than the bot and refused it .*upgrade workers")
    engine = InstantEngine()
    # The others' job needs nothing of version 2: the bot's own version ("written") refuses.
    seed = 2**32 if newer == "version" else 1
    job_id, sink = await _one_job(conn, tmp_path, nats, engine, seed)
    assert engine.rendered == []  # nothing rendered without what the bot asked for
    (ended,) = sink.delivered
    assert not ended.succeeded
    assert ended.error == f"{OLDER_WORKER}; reference {job_id}"
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status == "failed"
    usage = await ledger.usage(conn, MEMBER, SERVER, period_start(Period.DAY, time.time()))
    assert usage.images == 0
    told = [record.getMessage() for record in error_logs.records]
    expected = {
        "version": "its messages are version 2, this worker's 1",
        "unknown field": "fields this worker does not know (guidance_rescale)",
        "unknown option": "fields this worker does not know (options.guidance_rescale)",
    }[newer]
    assert any(expected in line and "upgrade workers with the bot" in line for line in told)


@pytest.mark.parametrize("sent", ["this version", "no version", "to a version 1 worker"])
async def test_a_job_of_this_version_or_an_older_bots_renders(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
    sent: str,
) -> None:
    """And in a rolling upgrade, a worker of version 1 renders this bot's jobs that need
    nothing of version 2 (``job_wire_version``: seeds within 32 bits)."""
    if sent == "to a version 1 worker":
        monkeypatch.setattr(wire, "WIRE_VERSION", wire.WIDE_SEEDS_VERSION - 1)
    monkeypatch.setattr(JobMessage, "encode", lambda message: _sent_as(sent, message))
    engine = InstantEngine()
    _, sink = await _one_job(conn, tmp_path, nats, engine)
    (ended,) = sink.delivered
    assert ended.succeeded, ended.error
    assert [request.schedule_type for request in engine.rendered] == ["Karras"]


async def test_an_untagged_result_of_a_worker_from_before_tags_fails_the_job_and_says_so(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker from before tags publishes its result with none, then acks the job: the result
    is dropped as any unverified one, and the job fails at once, refunded; the operator's lines
    name an older worker as a likely cause."""
    client = await nats.client()
    queue, sink = await started_queue(conn, client.slots(), tmp_path / "images")
    submission = Submission("imagine", RenderRequest("a cat", seed=1), MEMBER, SERVER)
    job_id = await queue.submit(submission)
    older = await nats_client.connect(nats.server.url)
    try:
        js = older.jetstream()
        async with asyncio.timeout(20):
            while True:  # the bot makes the job's consumer as it publishes
                try:
                    puller = await js.pull_subscribe_bind(consumer_name(None), wire.JOBS_STREAM)
                    (message,) = await puller.fetch(1, timeout=10)
                    break
                except nats_client.js.errors.ServiceUnavailableError:  # no consumer yet: a 503
                    await asyncio.sleep(0.05)
            result = ResultMessage(job_id, Outcome.DONE, "older-worker", 1)
            await js.publish(result_subject(job_id), result.encode())  # no Easel-Tag header
            await message.ack()
            await sink.wait_for(1)
    finally:
        await older.close()
        await queue.stop()
    (ended,) = sink.delivered
    assert ended.error is not None
    assert ended.error.startswith("it was removed from the broker without a result Easel accepts")
    usage = await ledger.usage(conn, MEMBER, SERVER, period_start(Period.DAY, time.time()))
    assert usage.images == 0
    said = [record.getMessage() for record in caplog.records if record.name.startswith("bot.jobs")]
    assert any(
        "no tag at all: a worker older than the bot? upgrade workers with the bot" in line
        for line in said
    ), said
