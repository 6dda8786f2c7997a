"""The broker's streams and picture bucket have byte caps, on a fresh nats-server, on one an
older Easel set up without them, and a server too small for them says so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nats as nats_client
import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from bot.jobs.broker.wire import (
    ADVISORIES_MAX_BYTES,
    ADVISORIES_STREAM,
    IMAGES_BUCKET,
    IMAGES_MAX_BYTES,
    JOBS_MAX_BYTES,
    JOBS_STREAM,
    MAX_DELIVERIES_ADVISORIES,
    RESULT_TTL_S,
    RESULTS_MAX_BYTES,
    RESULTS_STREAM,
    SETTLED_MAX_BYTES,
    SETTLED_STREAM,
    BrokerUnavailable,
    ensure_streams,
    job_subject,
)
from tests.distributed.nats_server import NatsServer

# A full jobs stream refuses new jobs rather than drop waiting ones; the rest drop the oldest.
CAPS = {
    JOBS_STREAM: (JOBS_MAX_BYTES, DiscardPolicy.NEW),
    RESULTS_STREAM: (RESULTS_MAX_BYTES, DiscardPolicy.OLD),
    SETTLED_STREAM: (SETTLED_MAX_BYTES, DiscardPolicy.OLD),
    ADVISORIES_STREAM: (ADVISORIES_MAX_BYTES, DiscardPolicy.OLD),
    f"OBJ_{IMAGES_BUCKET}": (IMAGES_MAX_BYTES, DiscardPolicy.OLD),
}


async def caps_of(js: JetStreamContext) -> dict[str, tuple[int | None, DiscardPolicy | None]]:
    found = {}
    for name in CAPS:
        config = (await js.stream_info(name)).config
        found[name] = (config.max_bytes, config.discard)
    return found


async def test_a_fresh_broker_gets_capped_streams(nats_server: NatsServer) -> None:
    nc = await nats_client.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(nc, js)
        assert await caps_of(js) == CAPS
        await ensure_streams(nc, js)  # the worker's start after the bot's changes nothing
        assert await caps_of(js) == CAPS
    finally:
        await nc.close()


async def test_streams_an_older_easel_made_get_their_caps_and_keep_their_messages(
    nats_server: NatsServer,
) -> None:
    nc = await nats_client.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # What Easel made before the caps: no max_bytes anywhere.
        for name, subject, retention in (
            (JOBS_STREAM, "easel.jobs.>", RetentionPolicy.WORK_QUEUE),
            (RESULTS_STREAM, "easel.results.*", RetentionPolicy.LIMITS),
            (ADVISORIES_STREAM, MAX_DELIVERIES_ADVISORIES, RetentionPolicy.WORK_QUEUE),
        ):
            await js.add_stream(
                StreamConfig(
                    name=name, subjects=[subject], retention=retention, storage=StorageType.FILE
                )
            )
        bucket = await js.create_object_store(
            IMAGES_BUCKET, ttl=RESULT_TTL_S, storage=StorageType.FILE
        )
        await bucket.put("job-1/0.png", b"a picture")
        await js.publish(job_subject(None), b"a waiting job")
        assert (await js.stream_info(JOBS_STREAM)).config.max_bytes == -1

        images = await ensure_streams(nc, js)

        assert await caps_of(js) == CAPS
        assert (await js.stream_info(JOBS_STREAM)).state.messages == 1
        assert (await images.get("job-1/0.png")).data == b"a picture"
    finally:
        await nc.close()


def small_nats_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A nats-server with 64 MiB of JetStream file storage: less than Easel's streams reserve."""
    config = folder / "small.conf"
    config.write_text(
        f'jetstream {{ store_dir: "{folder / "store"}", max_file_store: 64MB }}\n'
        f"listen: 127.0.0.1:{port}\n"
    )
    return subprocess.Popen(
        [NatsServer.binary(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_broker_with_too_little_storage_is_named_clearly(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "store", max_file_store="64MB")
    server.start()
    try:
        nc = await nats_client.connect(server.url)
        try:
            with pytest.raises(BrokerUnavailable, match="raise its max_file_store"):
                await ensure_streams(nc, nc.jetstream())
        finally:
            await nc.close()
    finally:
        server.stop()
