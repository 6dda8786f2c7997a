"""The broker's copies of an ended job are settled even when the broker was away as it ended
and the bot restarted before it answered again: the chore is recorded with the job's end and
done once the broker answers. /forget-me deletes the job messages of the member's jobs too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import aiosqlite
import nats as nats_client
import pytest

from bot.jobs.accounting import Member
from bot.jobs.broker.client import BrokerClient
from bot.jobs.broker.wire import (
    JOBS_STREAM,
    TAG_HEADER,
    JobMessage,
    Outcome,
    ResultMessage,
    headers_for_job,
    job_subject,
    result_subject,
    tag,
)
from bot.jobs.queue import CancelOutcome, JobQueue, Submission
from db import broker_chores
from inference.types import RenderRequest
from tests.distributed.test_broker_copies import broker_copies, stored_result
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

MEMBER, GUILD = 7, 5


def submission(seed: int) -> Submission:
    request = RenderRequest("a lake", seed=seed, steps=2)
    return Submission(kind="imagine", request=request, user_id=MEMBER, guild_id=GUILD)


async def started_queue(
    conn: aiosqlite.Connection, client: BrokerClient, tmp_path: Path
) -> tuple[JobQueue, RecordingSink]:
    queue = JobQueue(conn, client.slots(), tmp_path / "images", copies=client)
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    return queue, sink


async def jobs_on_the_stream(url: str) -> int:
    observer = await nats_client.connect(url)
    try:
        return (await observer.jetstream().stream_info(JOBS_STREAM)).state.messages
    finally:
        await observer.close()


async def until_handed_over(url: str) -> None:
    """Until a job's message waits in the jobs stream for a worker."""
    async with asyncio.timeout(10):
        while not await jobs_on_the_stream(url):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def until_chores_done(conn: aiosqlite.Connection) -> None:
    async with asyncio.timeout(20):
        while await broker_chores.owed(conn):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def settled_before_a_worker_renders(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport, job_id: str
) -> None:
    """The bot started again on ``conn``, its chores done: nothing of ``job_id`` is left on
    the broker, and a worker started then renders only a later job (none of ``job_id``,
    whose result is a cancelled marker)."""
    restarted = await nats.client(slots=1)
    queue, sink = await started_queue(conn, restarted, tmp_path)
    await until_chores_done(conn)
    # Gone once settled, before any worker could pull it (and ack it, seeing it settled).
    assert await broker_copies(nats.server.url, {job_id}) == []
    engine = InstantEngine()
    nats.start_worker(engine)
    # A later job: the worker takes the jobs in order, so ``job_id`` would come first.
    await queue.submit(submission(seed=4))
    await sink.wait_for(1)
    await queue.stop()

    assert [request.seed for request in engine.rendered] == [4]
    assert (await stored_result(nats.server.url, job_id)).outcome is Outcome.CANCELLED


async def test_a_job_cancelled_while_the_broker_is_away_is_not_rendered_after_a_bot_restart(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await nats.client(slots=1)
    # Each of the cancel's requests waits this long for a broker away (5 s by default).
    monkeypatch.setattr(client._js, "_timeout", 0.5)
    queue, sink = await started_queue(conn, client, tmp_path)
    job_id = await queue.submit(submission(seed=3))
    await until_handed_over(nats.server.url)

    nats.server.stop()
    assert await queue.cancel(job_id, Member(MEMBER, GUILD)) is CancelOutcome.STOPPING
    await sink.wait_for(1)  # its end recorded, and its member told
    assert [chore.job_id for chore in await broker_chores.owed(conn)] == [job_id]
    # The bot restarts (a deploy) while the broker is away: what the client buffered is lost.
    await queue.stop()
    with contextlib.suppress(Exception):
        await client.close()

    nats.server.start()
    await settled_before_a_worker_renders(conn, tmp_path, nats, job_id)


async def test_cancels_whose_messages_are_known_gone_do_not_read_the_jobs_stream(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queued job never handed over, and one whose cancel deleted its message by sequence:
    their chores read no message of the jobs stream (each read returns a whole job)."""
    client = await nats.client(slots=1)
    stream_reads: list[int] = []  # the sequence each read of the stream began at
    get_msg = client._js.get_msg

    async def counted_get_msg(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("next"):
            stream_reads.append(args[1])
        return await get_msg(*args, **kwargs)

    monkeypatch.setattr(client._js, "get_msg", counted_get_msg)
    queue, sink = await started_queue(conn, client, tmp_path)
    handed_over = await queue.submit(submission(seed=5))
    queued = await queue.submit(submission(seed=6))  # behind it: one slot
    await until_handed_over(nats.server.url)

    assert await queue.cancel(queued, Member(MEMBER, GUILD)) is CancelOutcome.CANCELLED
    assert await queue.cancel(handed_over, Member(MEMBER, GUILD)) is CancelOutcome.STOPPING
    await sink.wait_for(2)
    await until_chores_done(conn)
    await queue.stop()

    assert stream_reads == []
    assert await jobs_on_the_stream(nats.server.url) == 0


async def test_a_cancel_whose_delete_failed_has_its_chore_read_the_jobs_stream(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cancel's read of its message by sequence timed out: the message is left, and the
    job's chore finds it in the stream (no restart: not among an earlier bot's messages)."""
    client = await nats.client(slots=1)
    get_msg = client._js.get_msg

    async def by_sequence_times_out(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("next") and not kwargs.get("subject"):
            raise nats_client.errors.TimeoutError
        return await get_msg(*args, **kwargs)

    monkeypatch.setattr(client._js, "get_msg", by_sequence_times_out)
    queue, sink = await started_queue(conn, client, tmp_path)
    job_id = await queue.submit(submission(seed=7))
    await until_handed_over(nats.server.url)

    assert await queue.cancel(job_id, Member(MEMBER, GUILD)) is CancelOutcome.STOPPING
    await sink.wait_for(1)
    await until_chores_done(conn)
    await queue.stop()

    assert await jobs_on_the_stream(nats.server.url) == 0


async def test_forget_me_deletes_the_members_jobs_left_in_the_jobs_stream(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job cancelled while the broker was away, by a bot that stopped before it answered,
    left its message (its prompt, its inline pictures) there. Its result goes first: reading
    the jobs stream takes longest, and the erase's time is bounded."""
    client = await nats.client()
    publisher = await nats_client.connect(nats.server.url)
    try:
        js = publisher.jetstream()
        for job_id in ("mine", "theirs"):
            job = JobMessage(job_id, RenderRequest("a secret"), (), client.job_secret(job_id))
            await js.publish(job_subject(None), job.encode(), headers=headers_for_job(job_id))
        result = ResultMessage("mine", Outcome.DONE, "a worker", 1).encode()
        tagged = {TAG_HEADER: tag(client.job_secret("mine"), result)}
        await js.publish(result_subject("mine"), result, headers=tagged)
    finally:
        await publisher.close()
    held_at_the_read: list[list[str]] = []
    read_jobs_stream = client._delete_job_messages

    async def delete_job_messages(job_ids: Collection[str], until: int | None) -> int | None:
        held_at_the_read.append(await broker_copies(nats.server.url, {"mine"}))
        return await read_jobs_stream(job_ids, until)

    monkeypatch.setattr(client, "_delete_job_messages", delete_job_messages)

    await client.drop_copies(["mine"])

    assert held_at_the_read == [["job message mine"]]
    assert await broker_copies(nats.server.url, {"mine"}) == []
    assert await broker_copies(nats.server.url, {"theirs"}) == ["job message theirs"]


@pytest.mark.parametrize("removal", ["purged", "deleted"])
async def test_forget_me_goes_on_past_messages_removed_between_its_read_and_its_delete(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch, removal: str
) -> None:
    """A purge, or a delete by sequence (a worker's ack, another bot's cancel), takes each
    message the erase has just read: the broker answers its delete that there is none
    (nats-server 2.15: a 500, not a 404), which is what the erase wanted, and it goes on."""
    client = await nats.client()
    remover = await nats_client.connect(nats.server.url)
    try:
        js = remover.jetstream()
        job = JobMessage("mine", RenderRequest("a secret"), (), client.job_secret("mine"))
        await js.publish(job_subject(None), job.encode(), headers=headers_for_job("mine"))
        result = ResultMessage("mine", Outcome.DONE, "a worker", 1).encode()
        tagged = {TAG_HEADER: tag(client.job_secret("mine"), result)}
        await js.publish(result_subject("mine"), result, headers=tagged)
        removed: list[str] = []

        async def remove(stream: str, stored: Any) -> Any:
            if stored is not None and stored.subject not in removed:
                removed.append(stored.subject)
                if removal == "purged":
                    await js.purge_stream(stream, subject=stored.subject)
                else:
                    await js.delete_msg(stream, stored.seq)
            return stored

        get_msg, get_last_msg = client._js.get_msg, client._js.get_last_msg

        async def removed_once_read(stream: str, *args: Any, **kwargs: Any) -> Any:
            return await remove(stream, await get_msg(stream, *args, **kwargs))

        async def last_removed_once_read(stream: str, *args: Any, **kwargs: Any) -> Any:
            return await remove(stream, await get_last_msg(stream, *args, **kwargs))

        monkeypatch.setattr(client._js, "get_msg", removed_once_read)
        monkeypatch.setattr(client._js, "get_last_msg", last_removed_once_read)

        await client.drop_copies(["mine"])
    finally:
        await remover.close()

    assert sorted(removed) == [job_subject(None), result_subject("mine")]
    assert await broker_copies(nats.server.url, {"mine"}) == []
    assert (await stored_result(nats.server.url, "mine")).outcome is Outcome.DONE
