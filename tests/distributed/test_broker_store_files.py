"""What the broker's own files keep of a member's job once /forget-me dropped its copies:
the stored result (prompt, negative, inline picture) and the pictures in the image store are
erased from the disk, not only hidden from the API. A job's ordinary settle only hides them
(docs/security.md, "Erased means gone from the disk"), and acknowledged job messages are not
looked at: the bot cannot erase those. And a late worker's result that comes while the bot
stores a job's marker leaves none of its pictures readable."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import nats as nats_client
import pytest

import bot.jobs.broker.worker as worker_module
from bot.jobs.broker.client import BOT_REPORTER, MARKER_ATTEMPTS, BrokerClient
from bot.jobs.broker.wire import (
    IMAGES_BUCKET,
    RESULTS_STREAM,
    TAG_HEADER,
    ImageRef,
    Outcome,
    ResultMessage,
    result_subject,
    tag,
)
from bot.jobs.queue import JobQueue, Submission
from inference.types import RenderRequest
from tests.distributed.test_broker_copies import (
    GUILD,
    MEMBER,
    history_on,
    noise_bytes,
    run_jobs,
    stored_result,
)
from tests.distributed.test_broker_images import NOISE_SIDE, stored_object_names
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

PROMPT, NEGATIVE = "zzstoredprompt", "zzstorednegative"
# The streams the bot erases from: results, and the image store's.
ERASED_STREAMS = (RESULTS_STREAM, f"OBJ_{IMAGES_BUCKET}")


def stream_files_holding(store_dir: Path, needle: bytes) -> list[str]:
    """The files of ``ERASED_STREAMS`` in the server's store folder that hold ``needle``."""
    held = []
    for stream in ERASED_STREAMS:
        for path in store_dir.glob(f"**/streams/{stream}/**/*"):
            if path.is_file() and needle in path.read_bytes():
                held.append(str(path.relative_to(store_dir)))
    return held


async def test_dropping_a_jobs_copies_erases_its_result_from_the_brokers_files(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    client = await nats.client()
    nats.start_worker(InstantEngine())
    queue = JobQueue(conn, client.slots(), tmp_path / "images")  # no copies: dropped below
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    request = RenderRequest(f"a {PROMPT} owl", negative_prompt=NEGATIVE, width=64, height=64)
    job_id = await queue.submit(
        Submission(kind="imagine", request=request, user_id=MEMBER, guild_id=GUILD)
    )
    await sink.wait_for(1)
    await queue.stop()
    (image,) = sink.delivered[0].images
    inline_png = base64.b64encode(image.path.read_bytes())[:64]  # small: it rode in the result
    needles = (PROMPT.encode(), NEGATIVE.encode(), inline_png)
    store = nats.server.store_dir
    assert all(stream_files_holding(store, needle) for needle in needles)  # the check sees them

    await client.drop_copies([job_id])  # what /forget-me does

    assert [stream_files_holding(store, needle) for needle in needles] == [[], [], []]


async def test_forget_me_erases_the_members_results_and_pictures_from_the_brokers_files(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    # Left by a queue that kept them; pictures too large to ride in a message.
    submission = Submission(kind="imagine", request=RenderRequest(f"a {PROMPT}"), user_id=MEMBER)
    await run_jobs(conn, tmp_path, nats, [submission, submission], copies=None)
    store = nats.server.store_dir
    needles = [PROMPT.encode(), *[middle(png) for png in await stored_pictures(nats.server.url)]]
    assert len(needles) == 3 and all(stream_files_holding(store, needle) for needle in needles)

    forgotten = await history_on(conn, tmp_path, await nats.client()).forget(MEMBER)

    assert forgotten.jobs == 2 and not forgotten.broker_copies_left
    assert [stream_files_holding(store, needle) for needle in needles] == [[]] * len(needles)


def middle(data: bytes) -> bytes:
    """Bytes from the middle of a picture of noise: found in no other."""
    return data[len(data) // 2 : len(data) // 2 + 256]


async def stored_pictures(url: str) -> list[bytes]:
    observer = await nats_client.connect(url)
    try:
        bucket = await observer.jetstream().object_store(IMAGES_BUCKET)
        return [(await bucket.get(name)).data or b"" for name in await stored_object_names(url)]
    finally:
        await observer.close()


LATE_PROMPT = "zzlateprompt"


@asynccontextmanager
async def late_results(
    nats: NatsTransport,
    client: BrokerClient,
    monkeypatch: pytest.MonkeyPatch,
    job_id: str,
    races: int = 1,
) -> AsyncIterator[list[bytes]]:
    """Workers that missed the job's cancel: each stores a picture, then its result, just as
    the bot is about to store the job's marker (the first ``races`` of its tries). The first
    publishes through the worker's own code (only where no result is stored); the others
    plainly, as a worker's broker user may. Yields their pictures, once stored."""
    worker = await nats_client.connect(nats.server.url)
    hub = worker_module._Hub(worker, worker.jetstream())
    publish, pictures = client._js.publish, list[bytes]()

    async def a_late_result_first(subject: str, payload: bytes, **kwargs: Any) -> Any:
        if subject == result_subject(job_id) and len(pictures) < races:
            pictures.append(noise_bytes())
            name = f"{job_id}/{len(pictures)}-late-0.png"
            await (await hub.images()).put(name, pictures[-1])
            ref = ImageRef(1, f"a {LATE_PROMPT}", NOISE_SIDE, NOISE_SIDE, object_name=name)
            late = ResultMessage(job_id, Outcome.DONE, "a worker", len(pictures), (ref,))
            secret = client.job_secret(job_id)
            if len(pictures) == 1:
                await hub.publish_result(late, secret)
            else:
                data = late.encode()
                await publish(result_subject(job_id), data, headers={TAG_HEADER: tag(secret, data)})
        return await publish(subject, payload, **kwargs)

    monkeypatch.setattr(client._js, "publish", a_late_result_first)
    try:
        yield pictures
    finally:
        await worker.close()
    assert len(pictures) == races  # each came in time


async def readable_pictures(url: str, job_id: str) -> list[str]:
    """The pictures of ``job_id`` the image store still gives out."""
    observer = await nats_client.connect(url)
    try:
        bucket = await observer.jetstream().object_store(IMAGES_BUCKET)
        names = [name for name in await stored_object_names(url) if name.startswith(job_id)]
        readable = []
        for name in names:
            try:
                await bucket.get(name)
            except nats_client.js.errors.ObjectNotFoundError:
                continue  # deleted: its tombstone is dropped with the bucket's TTL
            readable.append(name)
        return readable
    finally:
        await observer.close()


@pytest.mark.parametrize("races", [1, MARKER_ATTEMPTS], ids=["once", "on every try"])
async def test_a_late_result_that_comes_as_a_job_settles_leaves_no_picture_readable(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch, races: int
) -> None:
    """Cancelled before any result was stored: the late result finds the place empty. Its
    pictures leave the store with the settle (on every try: the marker replaces the last)."""
    client = await nats.client()
    async with late_results(nats, client, monkeypatch, "late", races):
        await client.settle("late", "cancelled")

    assert await stored_result(nats.server.url, "late") == ResultMessage(
        "late", Outcome.CANCELLED, BOT_REPORTER, 0
    )
    assert await readable_pictures(nats.server.url, "late") == []


async def test_a_result_stored_between_the_erase_and_the_marker_is_erased_too(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/forget-me erases a job's result; a late worker publishes its own in the empty place
    before the marker: the marker's publish is refused, and the bot erases that one too."""
    client = await nats.client()
    worker = await nats_client.connect(nats.server.url)
    stored = ResultMessage("raced", Outcome.FAILED, "a worker", 1, error=f"a {PROMPT} failed")
    await worker_module._Hub(worker, worker.jetstream()).publish_result(
        stored, client.job_secret("raced")
    )
    await worker.close()
    async with late_results(nats, client, monkeypatch, "raced") as pictures:
        await client.drop_copies(["raced"])

    assert await stored_result(nats.server.url, "raced") == ResultMessage(
        "raced", Outcome.FAILED, BOT_REPORTER, 0
    )
    needles = (PROMPT.encode(), LATE_PROMPT.encode(), middle(pictures[0]))
    assert [stream_files_holding(nats.server.store_dir, needle) for needle in needles] == [
        [],
        [],
        [],
    ]
    assert await readable_pictures(nats.server.url, "raced") == []
