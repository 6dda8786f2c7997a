"""Jobs already handed over when the broker loses them: its store lost (restarted without
it), or their message expired. The waiting slot hands the job over again, or fails it; it
never waits forever. And the jobs stream remembers a job's id as long as its message is kept,
so a restarted bot's republish is a duplicate. A real nats-server, its timeouts scaled down."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path

import nats as nats_client
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bot.jobs.broker import client as client_module
from bot.jobs.broker import wire
from bot.jobs.broker.client import (
    BrokerClient,
    BrokerConfig,
    BrokerUnavailable,
    RemoteRenderFailed,
    _HandedOver,
)
from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import RenderStoppedAfter, Submission
from db import jobs as journal
from inference.types import RenderRequest
from tests.distributed.nats_server import NatsServer
from tests.distributed.test_broker_outage import bot_on, logged, until
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine


def imagine(prompt: str, user_id: int) -> Submission:
    return Submission("imagine", RenderRequest(prompt, steps=2), user_id=user_id)


async def jobs_waiting(url: str) -> int:
    nc = await nats_client.connect(url)
    try:
        return (await nc.jetstream().stream_info(wire.JOBS_STREAM)).state.messages
    finally:
        await nc.close()


async def until_handed_over(url: str) -> None:
    async with asyncio.timeout(30):
        while not await jobs_waiting(url):  # noqa: ASYNC110 (the broker's state, polled)
            await asyncio.sleep(0.05)


async def remake_jobs_stream(other: NatsClient) -> None:
    """What another user (an operator, another bot's probe) may do: the jobs stream made
    again, empty, its sequences from 1."""
    await other.jetstream().delete_stream(wire.JOBS_STREAM)
    await wire.ensure_streams(other, other.jetstream())


async def test_a_job_waiting_when_the_broker_loses_its_store_is_handed_over_again(
    nats: NatsTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with bot_on(nats, tmp_path, slots=1, unreachable_after_s=0.5) as bot:
        # No worker yet: it waits in the jobs stream.
        job_id = await bot.queue.submit(imagine("a lake", user_id=1))
        await until_handed_over(nats.server.url)
        nats.server.stop()
        shutil.rmtree(nats.server.store_dir)  # a container recreated without its volume
        nats.server.start()
        await until(lambda: logged(caplog, "handed over again"))  # the streams made again
        nats.start_worker(InstantEngine())
        await bot.sink.wait_for(1)
        assert [(job.job_id, job.succeeded) for job in bot.sink.delivered] == [(job_id, True)]
        record = await journal.get_job(bot.conn, job_id)
        assert record is not None and record.status is journal.JobStatus.DONE
        assert logged(caplog, "the broker lacks a stream") == 1


async def test_a_job_whose_jobs_stream_another_user_made_again_is_handed_over_again(
    nats: NatsTransport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream is there at every recheck, but no longer holds the job: it was made again
    (by an operator, or another bot's probe) between two of them."""
    caplog.set_level(logging.INFO)
    async with bot_on(nats, tmp_path, slots=1, unreachable_after_s=0.5) as bot:
        await bot.queue.submit(imagine("a hill", user_id=2))
        await until_handed_over(nats.server.url)
        other = await nats_client.connect(nats.server.url)
        try:
            await remake_jobs_stream(other)
        finally:
            await other.close()
        nats.start_worker(InstantEngine())
        await bot.sink.wait_for(1)
        assert [job.succeeded for job in bot.sink.delivered] == [True]
        # Handed over again once; nearly always found made again (a recheck that falls in the
        # millisecond between the delete and the create finds it missing instead).
        made_again = logged(caplog, "jobs stream was made again")
        assert made_again + logged(caplog, "the broker lacks a stream") == 1


async def test_a_job_whose_message_expired_without_a_result_fails(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "RESULT_TTL_S", 1.0)  # the streams' age limit, scaled down
    client = await nats.client(slots=1)
    request = RenderRequest("a lake", steps=2)
    async with asyncio.timeout(30):  # no worker ever takes it
        with pytest.raises(RemoteRenderFailed, match="no render worker finished it"):
            await client.render("00000000000000e1", request, None, None)


async def test_a_job_republished_after_a_restart_expires_by_its_first_publish(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restarted bot's copy is a duplicate: the message is as old as the first publish,
    and is told expired when it goes at its age limit, not "removed"."""
    monkeypatch.setattr(wire, "RESULT_TTL_S", 3.0)  # the streams' age limit, scaled down
    request = RenderRequest("a lake", steps=2)
    first = asyncio.ensure_future(
        (await nats.client(slots=1)).render("00000000000000e2", request, None, None)
    )
    await until_handed_over(nats.server.url)
    # The restart: early, so that the republish comes before the message's age limit even on
    # a loaded machine (its id is remembered as long: a republish after it would be dropped
    # with no message left to date, and told "removed").
    await asyncio.sleep(0.5)
    restarted = await nats.client(slots=1)
    async with asyncio.timeout(30):  # no worker ever takes it
        with pytest.raises(RemoteRenderFailed, match="no render worker finished it within 3 s"):
            await restarted.render("00000000000000e2", request, None, None)
        with pytest.raises(RemoteRenderFailed, match="no render worker finished it"):
            await first


async def test_a_job_whose_message_left_early_without_a_result_is_not_called_expired(
    nats: NatsTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's user may publish on any job's result subject: a worker that finds such a
    made-up result takes the job as done and only acks it, long before it would expire."""
    client = await nats.client(slots=1)
    job_id = "00000000000000f1"
    other = await nats_client.connect(nats.server.url)
    try:
        await other.jetstream().publish(wire.result_subject(job_id), b'{"made": "up"}')
    finally:
        await other.close()
    render = asyncio.ensure_future(client.render(job_id, RenderRequest("x", steps=2), None, None))
    await until_handed_over(nats.server.url)
    nats.start_worker(InstantEngine())
    async with asyncio.timeout(30):
        with pytest.raises(RemoteRenderFailed) as failed:
            await render
    assert str(failed.value) == "it was removed from the broker without a result Easel accepts"
    assert logged(caplog, "without a result Easel accepts (purged") == 1


async def test_a_cancel_after_the_jobs_stream_is_made_again_leaves_other_jobs(
    nats_server: NatsServer,
) -> None:
    """Sequences start at 1 again in a remade stream: a job cancelled before its slot's next
    recheck saw the remake must not delete the job now at its old sequence."""
    # No recheck during the test: the cancel is what finds the stream made again.
    config = BrokerConfig(nats_server.url, slots=2, result_recheck_s=600.0)
    client = await BrokerClient.open(config)
    other = await nats_client.connect(nats_server.url)
    try:
        cancel_first, cancel_second = threading.Event(), threading.Event()
        first = asyncio.ensure_future(
            client.render("00000000000000a1", RenderRequest("a", steps=2), None, cancel_first)
        )
        await until_handed_over(nats_server.url)
        await remake_jobs_stream(other)
        second = asyncio.ensure_future(
            client.render("00000000000000b2", RenderRequest("b", steps=2), None, cancel_second)
        )
        await until_handed_over(nats_server.url)
        cancel_first.set()
        with pytest.raises(RenderStoppedAfter):
            await asyncio.wait_for(first, 30)
        kept = await other.jetstream().get_msg(wire.JOBS_STREAM, 1)
        assert (kept.headers or {}).get("Nats-Msg-Id") == "00000000000000b2"
        cancel_second.set()
        with pytest.raises(RenderStoppedAfter):
            await asyncio.wait_for(second, 30)
    finally:
        await other.close()
        await client.close()


async def test_a_stored_result_is_taken_though_the_jobs_stream_was_made_again(
    nats_server: NatsServer,
) -> None:
    """Another user remade the jobs stream alone: a job whose result is stored is done, not
    handed over again (which pauses dispatch until the broker is probed)."""
    client = await BrokerClient.open(BrokerConfig(nats_server.url, slots=1))
    other = await nats_client.connect(nats_server.url)
    try:
        job_id = "00000000000000c3"
        handed_over = _HandedOver(
            1, (await other.jetstream().stream_info(wire.JOBS_STREAM)).created, 0.0
        )
        await remake_jobs_stream(other)
        result = wire.ResultMessage(job_id, wire.Outcome.FAILED, "gpu-0", 1, error="it broke")
        await client._publish_result(result, client.job_secret(job_id))
        assert await client._recheck(job_id, handed_over) == result
    finally:
        await other.close()
        await client.close()


async def test_a_broker_gone_while_the_bot_starts_is_what_it_is_told(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection cannot flush what it buffered: closing it must not hide why the start
    failed."""

    async def broker_gone(nc: NatsClient, _: object) -> None:
        nats_server.stop()
        await until(lambda: not nc.is_connected)
        await nc.publish(wire.DOORBELL_SUBJECT)  # buffered: the broker is away
        raise BrokerUnavailable("the broker went away")

    monkeypatch.setattr(client_module, "ensure_streams", broker_gone)
    with pytest.raises(BrokerUnavailable, match="the broker went away"):
        await BrokerClient.open(BrokerConfig(nats_server.url))


async def test_the_jobs_stream_remembers_job_ids_as_long_as_results_are_kept(
    nats_server: NatsServer,
) -> None:
    """A bot restarted hours after it published a job still waiting (or rendering) publishes
    it again: the copy is dropped only while the stream remembers the id (2 min by default)."""
    nc = await nats_client.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # What an older Easel made: the server's default duplicate window, no age limit.
        await js.add_stream(
            StreamConfig(
                name=wire.JOBS_STREAM,
                subjects=["easel.jobs.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await js.publish(wire.job_subject(None), b"a waiting job")

        await wire.ensure_streams(nc, js)

        info = await js.stream_info(wire.JOBS_STREAM)
        assert (info.config.duplicate_window, info.config.max_age) == (wire.RESULT_TTL_S,) * 2
        assert info.state.messages == 1
        # A fresh broker gets them too; a second start changes nothing.
        await js.delete_stream(wire.JOBS_STREAM)
        await wire.ensure_streams(nc, js)
        await wire.ensure_streams(nc, js)
        config = (await js.stream_info(wire.JOBS_STREAM)).config
        assert (config.duplicate_window, config.max_age) == (wire.RESULT_TTL_S,) * 2
    finally:
        await nc.close()


async def test_closing_while_the_broker_is_away_does_not_raise(
    nats: NatsTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot's shutdown closes its database and metrics server after the broker client."""
    client = await nats.client(slots=1)
    nats.server.stop()
    await until(lambda: not client._nc.is_connected)
    # What a slot sends while the broker is away (its recheck, a cancel) waits in the
    # connection's buffer, which closing cannot flush.
    await client._nc.publish(wire.DOORBELL_SUBJECT)
    await client.close()
    assert logged(caplog, "closed while the broker was away") == 1


async def test_a_worker_stopped_while_the_broker_is_away_stops_cleanly(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    config = WorkerConfig(nats_server.url, ("gpu-0",), idle_poll_s=0.1)
    serving = asyncio.create_task(serve(config, lambda _: InstantEngine(), stop))
    await until(lambda: logged(caplog, "serving gpu-0"))
    nats_server.stop()
    # The connection lost, then reconnects refused: its idle polls (each 0.1 s) wait in the
    # connection's buffer meanwhile.
    await until(lambda: logged(caplog, "encountered error") >= 3)
    stop.set()
    await asyncio.wait_for(serving, 30)
    assert logged(caplog, "closed while the broker was away") == 1
