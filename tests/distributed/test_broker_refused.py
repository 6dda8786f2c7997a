"""A bot whose broker user may use Easel's streams but not make them: when they are lost, the
missing right is said once, no loss is claimed while none was made good, and dispatch resumes
once another user makes them again. A real nats-server with per-user permissions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import nats as nats_client
import pytest
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from bot.jobs.broker import wire
from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.wire import BrokerRefused
from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import JobQueue, Submission
from bot.jobs.queue import job_queue as queue_module
from db.database import connect
from inference.types import RenderRequest
from tests.distributed.nats_server import NatsServer
from tests.distributed.test_broker_outage import logged, until
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

# The shipped bot user's rights, less making or changing streams.
CONFIG = """
jetstream: enabled
authorization {
  users = [
    { user: admin, password: admin }
    {
      user: bot, password: bot
      permissions {
        publish: {
          allow: ["easel.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$O.easel-images.>"]
          deny: ["$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>"]
        }
        subscribe: ["easel.>", "_INBOX.>"]
      }
    }
  ]
}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    config_file = tmp_path / "nats.conf"
    config_file.write_text(CONFIG)
    started = NatsServer(tmp_path / "jetstream", config_file=config_file)
    started.start()
    yield started
    started.stop()


async def make_streams(url: str) -> None:
    nc = await nats_client.connect(url)
    await wire.ensure_streams(nc, nc.jetstream())
    await nc.close()


async def delete_jobs_stream(url: str) -> None:
    nc = await nats_client.connect(url)
    await nc.jetstream().delete_stream(wire.JOBS_STREAM)
    await nc.close()


async def make_older_jobs_stream(url: str) -> None:
    """The jobs stream as an older Easel made it (or an operator's `nats stream add`): no age
    limit, and the server's 2 min duplicate window."""
    nc = await nats_client.connect(url)
    await nc.jetstream().add_stream(
        StreamConfig(
            name=wire.JOBS_STREAM,
            subjects=["easel.jobs.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_bytes=wire.JOBS_MAX_BYTES,
            discard=DiscardPolicy.NEW,
        )
    )
    await nc.close()


# What the bot logs when it may not give such a stream Easel's limits.
EDIT_OLDER_JOBS_STREAM = "nats stream edit EASEL_JOBS --max-age 24h --dupe-window 24h"


async def test_a_bot_user_that_may_not_make_the_streams_is_refused_at_start(
    server: NatsServer,
) -> None:
    with pytest.raises(BrokerRefused, match=r"may not create the stream EASEL_JOBS ") as refused:
        await BrokerClient.open(BrokerConfig(server.url_for("bot", "bot")))
    # The subject as Easel sent it (nats-py lowers the server's text).
    assert "refuses it publish to $JS.API.STREAM.CREATE.EASEL_JOBS)" in str(refused.value)
    assert "give it the publish right to $JS.API.> as the bot user" in str(refused.value)


async def test_a_bot_user_that_may_not_update_streams_starts_with_an_older_easels(
    server: NatsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade: the streams are there, made by an older Easel; the bot may not give them
    the new limits, says how, and goes on with them. Its probes that make the streams again
    neither ask again (each refusal is a wait for no answer) nor warn again."""
    admin_url = server.url_for("admin", "admin")
    await make_streams(admin_url)
    await delete_jobs_stream(admin_url)
    await make_older_jobs_stream(admin_url)
    updates: list[str | None] = []
    update_stream = JetStreamContext.update_stream

    async def counted_update(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
        updates.append(config.name)
        return await update_stream(js, config)

    monkeypatch.setattr(JetStreamContext, "update_stream", counted_update)
    client = await BrokerClient.open(BrokerConfig(server.url_for("bot", "bot")))
    try:
        await wire.ensure_streams(client._nc, client._js)  # as a probe of a lost stream does
    finally:
        await client.close()
    assert updates == [wire.JOBS_STREAM]
    assert logged(caplog, EDIT_OLDER_JOBS_STREAM) == 1
    assert logged(caplog, "may not update the stream EASEL_JOBS (the server refuses it") == 1
    assert logged(caplog, "a cancelled job whose message the bot could not delete is rendered") == 1


async def test_a_bot_user_that_may_not_read_its_answers_is_told_that_right(
    tmp_path: Path,
) -> None:
    """Its requests are published, but it may not subscribe to the inbox their answers come
    to: the right it lacks is that subscription, not the publish."""
    config_file = tmp_path / "nats.conf"
    config_file.write_text(
        "jetstream: enabled\nauthorization { users = [ { user: bot, password: bot, permissions"
        ' { publish: [">"], subscribe: ["easel.>"] } } ] }\n'
    )
    server = NatsServer(tmp_path / "jetstream", config_file=config_file)
    server.start()
    try:
        with pytest.raises(BrokerRefused) as refused:
            await BrokerClient.open(BrokerConfig(server.url_for("bot", "bot")))
    finally:
        server.stop()
    told = str(refused.value)
    assert "may not read the stream EASEL_JOBS's settings" in told
    assert "give it the subscribe right to _INBOX.> as the bot user" in told
    assert "publish right" not in told


async def test_a_bot_user_that_may_not_make_the_streams_is_told_once(
    server: NatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(queue_module, "UNAVAILABLE_PROBE_WAITS_S", (0.05, 0.1))
    admin_url, bot_url = server.url_for("admin", "admin"), server.url_for("bot", "bot")
    conn = await connect(tmp_path / "easel.sqlite3")
    client: BrokerClient | None = None
    queue: JobQueue | None = None
    stop = asyncio.Event()
    worker: asyncio.Task[None] | None = None
    try:
        await make_streams(admin_url)
        client = await BrokerClient.open(BrokerConfig(bot_url, slots=1, unreachable_after_s=0.5))
        queue = JobQueue(conn, client.slots(), tmp_path / "images")
        sink = RecordingSink(conn)
        queue.set_sink(sink)
        await queue.start()
        engine = InstantEngine()
        worker = asyncio.create_task(
            serve(WorkerConfig(admin_url, ("gpu-0",), idle_poll_s=0.1), lambda _: engine, stop)
        )
        # One handed over first: its consumer, made by the bot, goes with the stream.
        await queue.submit(Submission("imagine", RenderRequest("a hill", steps=2), user_id=1))
        await sink.wait_for(1)
        await delete_jobs_stream(admin_url)  # lost with the broker's store
        await queue.submit(Submission("imagine", RenderRequest("a lake", steps=2), user_id=1))
        # Two probes refused after the first (each waits out the API's 5 s timeout).
        await until(lambda: logged(caplog, "still does not answer") >= 2)
        assert logged(caplog, "may not create the stream EASEL_JOBS") == 1
        assert logged(caplog, "$JS.API.> as the bot user of deploy/nats-server.conf") == 1
        nats_lines = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]
        assert sum("permissions violation for publish" in str(e) for e in nats_lines) == 1
        assert logged(caplog, "are lost") == 0
        # The operator's user makes the stream again, with other limits: the bot may not
        # change them, and goes on with them.
        await make_older_jobs_stream(admin_url)
        await asyncio.wait_for(sink.wait_for(2), 60)
        assert [job.succeeded for job in sink.delivered] == [True, True]
        assert logged(caplog, EDIT_OLDER_JOBS_STREAM) == 1
        assert logged(caplog, "dispatch resumed") == 1
        assert logged(caplog, "are lost") == 1
        # Remade by the operator again before any probe of the bot sees them missing: the
        # bot's consumer went with them, and it makes it again before the next job.
        await delete_jobs_stream(admin_url)
        await make_streams(admin_url)
        await queue.submit(Submission("imagine", RenderRequest("a pond", steps=2), user_id=1))
        await asyncio.wait_for(sink.wait_for(3), 60)
        assert [job.succeeded for job in sink.delivered] == [True, True, True]
    finally:
        stop.set()
        if worker is not None:
            await worker
        if queue is not None:
            await queue.stop()
        if client is not None:
            await client.close()
        await conn.close()
