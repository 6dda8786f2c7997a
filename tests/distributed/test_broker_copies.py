"""Copies of a member's jobs in the broker (requests, results, pictures): gone once the bot
has recorded a job's outcome, and gone with /forget-me; a broker that cannot be reached does
not fail /forget-me."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
from pathlib import Path
from typing import cast

import aiosqlite
import nats as nats_client
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from PIL import Image

import bot.history as history_module
import bot.jobs.broker.worker as worker_module
from bot.history import History
from bot.jobs.broker.client import BOT_REPORTER, BrokerClient, BrokerConfig
from bot.jobs.broker.wire import (
    IMAGES_BUCKET,
    JOBS_STREAM,
    RESULTS_STREAM,
    TAG_HEADER,
    ImageRef,
    JobMessage,
    Outcome,
    ResultMessage,
    consumer_name,
    job_subject,
    picture_digest,
    result_subject,
    retry_transient,
    tag,
)
from bot.jobs.queue import JobCopies, JobQueue, Submission
from bot.policy.member_settings import MemberSettings
from db.history import count_rows_of_user
from inference.types import RenderRequest
from tests.distributed.nats_server import NatsServer
from tests.distributed.test_broker_images import NOISE_SIDE, NoisyEngine, stored_object_names
from tests.distributed.transports import NatsTransport
from tests.support.sinks import RecordingSink

MEMBER, OTHER_MEMBER, GUILD = 7, 8, 5


async def broker_copies(url: str, job_ids: set[str]) -> list[str]:
    """What the broker holds of these jobs: results other than a bare marker of the outcome,
    job messages, objects (tombstones too)."""
    observer = await nats_client.connect(url)
    js = observer.jetstream()
    held = []
    try:
        results = await js.stream_info(RESULTS_STREAM, subjects_filter="easel.results.*")
        for subject in results.state.subjects or {}:
            if subject.rsplit(".", 1)[1] in job_ids:
                stored = ResultMessage.decode((await js.get_last_msg(RESULTS_STREAM, subject)).data)
                if stored != bare_marker(stored):
                    held.append(subject)
        jobs = (await js.stream_info(JOBS_STREAM)).state
        for sequence in range(jobs.first_seq, jobs.last_seq + 1) if jobs.messages else ():
            try:
                job = JobMessage.decode((await js.get_msg(JOBS_STREAM, sequence)).data or b"")
            except nats_client.js.errors.NotFoundError:
                continue
            if job.job_id in job_ids:
                held.append(f"job message {job.job_id}")
        bucket = await js.object_store(IMAGES_BUCKET)
        try:
            objects = await bucket.list()  # deleted ones too: their tombstone names the job
        except nats_client.js.errors.NotFoundError:
            objects = []  # an empty bucket answers "no objects found"
        held += [info.name for info in objects if info.name.split("/")[0] in job_ids]
    finally:
        await observer.close()
    return sorted(held)


def bare_marker(result: ResultMessage) -> ResultMessage:
    """What the bot leaves of a result once the job's outcome is recorded: nothing of the
    member's (no pictures, no error that could quote the prompt)."""
    return ResultMessage(result.job_id, result.outcome, BOT_REPORTER, 0)


def noise_png(path: Path) -> str:
    """An input picture too large to ride in the job message: it goes to the object store."""
    path.write_bytes(noise_bytes())
    return str(path)


def noise_bytes() -> bytes:
    picture = Image.frombytes("RGB", (NOISE_SIDE, NOISE_SIDE), os.urandom(NOISE_SIDE**2 * 3))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    return png.getvalue()


async def run_jobs(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    submissions: list[Submission],
    copies: JobCopies | None,
) -> list[str]:
    """Render ``submissions`` through a queue on the broker (``copies``: what the queue drops
    once a job's outcome is recorded); their job ids, once all are delivered."""
    client = await nats.client()
    nats.start_worker(NoisyEngine())
    queue = JobQueue(conn, client.slots(), tmp_path / "images", copies=copies)
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    job_ids = [await queue.submit(submission) for submission in submissions]
    await sink.wait_for(len(submissions))
    await queue.stop()
    assert all(job.succeeded for job in sink.delivered)
    return job_ids


def history_on(conn: aiosqlite.Connection, tmp_path: Path, copies: JobCopies) -> History:
    """The bot's history over the data folder ``tmp_path``, the broker's copies dropped through
    ``copies``."""
    return History(
        conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn), copies=copies
    )


def with_large_input(tmp_path: Path, user_id: int) -> Submission:
    uploads = tmp_path / "inputs"  # where the bot keeps uploads: the data folder's inputs/
    uploads.mkdir(exist_ok=True)
    request = RenderRequest(
        "a cat", seed=1, mode="img2img", init_image=noise_png(uploads / f"in-{user_id}.png")
    )
    return Submission(kind="vary", request=request, user_id=user_id, guild_id=GUILD)


async def test_a_jobs_copies_leave_the_broker_once_its_outcome_is_recorded(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    # Its input picture and its output picture both too large to ride in a message.
    copies = await nats.client()
    (job_id,) = await run_jobs(conn, tmp_path, nats, [with_large_input(tmp_path, MEMBER)], copies)
    # Dropped in the background after the delivery; the queue's stop waited for it.
    assert await broker_copies(nats.server.url, {job_id}) == []


async def test_forget_me_deletes_the_members_copies_from_the_broker_and_only_theirs(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    # Left by a queue that kept them (a bot older than the drop, or a drop that failed).
    ours = await run_jobs(
        conn,
        tmp_path,
        nats,
        [
            with_large_input(tmp_path, MEMBER),
            Submission(kind="imagine", request=RenderRequest("a dog"), user_id=MEMBER),
        ],
        copies=None,
    )
    (theirs,) = await run_jobs(
        conn, tmp_path, nats, [with_large_input(tmp_path, OTHER_MEMBER)], copies=None
    )
    held = await broker_copies(nats.server.url, {*ours, theirs})
    assert {name.split("/")[0].rsplit(".", 1)[-1] for name in held} == {*ours, theirs}

    forgotten = await history_on(conn, tmp_path, await nats.client()).forget(MEMBER)

    assert forgotten.jobs == 2 and not forgotten.broker_copies_left
    assert await broker_copies(nats.server.url, set(ours)) == []
    assert await broker_copies(nats.server.url, {theirs}) == sorted(
        name for name in held if theirs in name
    )


async def test_forget_me_erases_and_says_so_when_the_broker_cannot_be_reached(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "BROKER_ERASE_S", 0.5)  # what the member waits for
    (job_id,) = await run_jobs(
        conn,
        tmp_path,
        nats,
        [Submission(kind="imagine", request=RenderRequest("a secret cat"), user_id=MEMBER)],
        copies=None,
    )
    # A broker of its own, so only this client sees it go away.
    away = NatsServer(tmp_path / "away")
    away.start()
    copies = await BrokerClient.open(BrokerConfig(away.url))
    away.stop()  # the client reconnects forever: its requests go unanswered
    history = history_on(conn, tmp_path, copies)
    caplog.clear()  # running the job may log its id; what /forget-me logs may not
    try:
        with caplog.at_level(logging.WARNING, logger="bot.history"):
            forgotten = await history.forget(MEMBER)
    finally:
        away.start()  # back, so the client closes cleanly once it has reconnected
        await retry_transient("reconnect", lambda: copies.drop_copies([]))
        await copies.close()
        away.stop()
    assert forgotten.jobs == 1 and forgotten.broker_copies_left
    assert await count_rows_of_user(conn, MEMBER) == 0
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "bot.history"]
    assert logged.startswith("/forget-me: the broker's copies of 1 job(s) stay until")
    assert job_id not in caplog.text and str(MEMBER) not in logged


async def publish_as_worker(js: JetStreamContext, job: JobMessage, png: bytes) -> None:
    """What a worker stores of a finished job: its picture in the image store, then its
    result naming it, tagged under the job's secret."""
    name = f"{job.job_id}/0.png"
    await (await js.object_store(IMAGES_BUCKET)).put(name, png)
    ref = ImageRef(1, "a cat", NOISE_SIDE, NOISE_SIDE, object_name=name, sha256=picture_digest(png))
    data = ResultMessage(job.job_id, Outcome.DONE, "a worker", 1, (ref,)).encode()
    await js.publish(result_subject(job.job_id), data, headers={TAG_HEADER: tag(job.secret, data)})


async def test_a_worker_whose_ack_was_lost_does_not_render_the_settled_job_again(
    nats: NatsTransport,
) -> None:
    client = await nats.client(ack_wait_s=1.0)
    crashed = await nats_client.connect(nats.server.url)
    published = asyncio.Event()

    async def on_job(_: Msg) -> None:
        published.set()

    # The bot makes the model's consumer (reading the stream's info first), then publishes:
    # its consumer exists once the job is seen (a job publish reaches core subscribers too).
    await crashed.subscribe("easel.jobs.>", cb=on_job)
    render = asyncio.create_task(client.render("lost-ack", RenderRequest("a cat"), None, None))
    async with asyncio.timeout(5):
        await published.wait()
    js = crashed.jetstream()
    taken = await js.pull_subscribe_bind(consumer=consumer_name(None), stream=JOBS_STREAM)
    (message,) = await taken.fetch(1, timeout=10)
    png = noise_bytes()
    await publish_as_worker(js, JobMessage.decode(message.data), png)
    await crashed.close()  # the worker dies before it acknowledges the job
    (image,) = await render
    await client.settle("lost-ack", "done")

    # JetStream redelivers the job after its ack wait; the worker that takes it finds the
    # marker and only acknowledges.
    engine = NoisyEngine()
    nats.start_worker(engine)
    await wait_until_acknowledged(nats.server.url)
    assert engine.rendered == []
    assert image.png == png
    assert await broker_copies(nats.server.url, {"lost-ack"}) == []


async def wait_until_acknowledged(url: str) -> None:
    observer = await nats_client.connect(url)
    try:
        async with asyncio.timeout(30):
            while (await observer.jetstream().stream_info(JOBS_STREAM)).state.messages:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await observer.close()


async def test_a_cancelled_jobs_arrived_result_is_settled_by_name_without_listing_the_broker(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await nats.client()
    job = JobMessage(
        "cancelled-late", RenderRequest("a cat"), (), client.job_secret("cancelled-late")
    )
    worker = await nats_client.connect(nats.server.url)
    try:
        await publish_as_worker(worker.jetstream(), job, noise_bytes())
    finally:
        await worker.close()

    async def listing(*_: object, **__: object) -> None:
        raise AssertionError("settling one job listed the broker's subjects")

    monkeypatch.setattr(client._js, "stream_info", listing)
    await client.settle(job.job_id, "cancelled")
    monkeypatch.undo()

    assert await broker_copies(nats.server.url, {job.job_id}) == []
    observer = await nats_client.connect(nats.server.url)
    try:
        stored = await observer.jetstream().get_last_msg(RESULTS_STREAM, result_subject(job.job_id))
    finally:
        await observer.close()
    assert ResultMessage.decode(stored.data or b"").outcome is Outcome.CANCELLED


async def test_forget_me_drops_past_a_malformed_entry_a_worker_left_in_the_image_store(
    nats: NatsTransport,
) -> None:
    client = await nats.client()
    holder = await nats_client.connect(nats.server.url)  # a worker: it holds the bucket
    js = holder.jetstream()
    try:
        bucket = await js.object_store(IMAGES_BUCKET)
        await bucket.put("job-a/0.png", b"a member's picture")
        await bucket.put("job-b/0.png", b"another of their pictures")
        malformed = base64.urlsafe_b64encode(b"job-a/zz").decode()
        await js.publish(f"$O.{IMAGES_BUCKET}.M.{malformed}", b"not an object's metadata")

        await client.drop_copies(["job-a", "job-b"])

        info = await js.stream_info(
            f"OBJ_{IMAGES_BUCKET}", subjects_filter=f"$O.{IMAGES_BUCKET}.M.>"
        )
    finally:
        await holder.close()
    assert not info.state.subjects


async def stored_result(url: str, job_id: str) -> ResultMessage:
    observer = await nats_client.connect(url)
    try:
        stored = await observer.jetstream().get_last_msg(RESULTS_STREAM, result_subject(job_id))
    finally:
        await observer.close()
    return ResultMessage.decode(stored.data or b"")


async def test_a_late_workers_result_leaves_the_settled_marker_and_takes_its_pictures_away(
    nats: NatsTransport,
) -> None:
    """A worker that missed the cancel (or lost its ack) publishes after the bot settled the
    job: the marker stays, and the pictures its result names leave the store."""
    client = await nats.client()
    await client.settle("late", "cancelled")
    worker = await nats_client.connect(nats.server.url)
    try:
        hub = worker_module._Hub(worker, worker.jetstream())
        png = noise_bytes()
        await (await hub.images()).put("late/0.png", png)
        ref = ImageRef(1, "a cat", NOISE_SIDE, NOISE_SIDE, object_name="late/0.png")
        late = ResultMessage("late", Outcome.DONE, "a worker", 1, (ref,))
        await hub.publish_result(late, client.job_secret("late"))
    finally:
        await worker.close()
    assert await stored_result(nats.server.url, "late") == ResultMessage(
        "late", Outcome.CANCELLED, BOT_REPORTER, 0
    )
    # Its tombstone (the object's name, no picture) is dropped with the bucket's TTL.
    assert await broker_copies(nats.server.url, {"late"}) == ["late/0.png"]
    observer = await nats_client.connect(nats.server.url)
    try:
        with pytest.raises(nats_client.js.errors.ObjectNotFoundError):  # deleted
            await (await observer.jetstream().object_store(IMAGES_BUCKET)).get("late/0.png")
    finally:
        await observer.close()


class AdvisoryNotice:
    """JetStream's max-deliveries notice for the job message at ``sequence``."""

    def __init__(self, sequence: int) -> None:
        self.data = json.dumps({"stream_seq": sequence, "deliveries": 3}).encode()
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


async def test_a_max_deliveries_notice_of_a_job_with_a_result_is_acknowledged(
    nats: NatsTransport,
) -> None:
    client = await nats.client()
    job = JobMessage("settled", RenderRequest("a cat"), (), client.job_secret("settled"))
    publisher = await nats_client.connect(nats.server.url)
    try:
        js = publisher.jetstream()
        sequence = (await js.publish(job_subject(None), job.encode())).seq
        await client.settle("settled", "done")  # its result arrived and was recorded
        notice = AdvisoryNotice(sequence)
        await client._on_max_deliveries(cast(Msg, notice))
        assert notice.acked
        with pytest.raises(nats_client.js.errors.NotFoundError):
            await js.get_msg(JOBS_STREAM, sequence)
    finally:
        await publisher.close()
    assert (await stored_result(nats.server.url, "settled")).outcome is Outcome.DONE


async def test_a_tagged_malformed_result_becomes_a_marker_too(nats: NatsTransport) -> None:
    client = await nats.client()
    worker = await nats_client.connect(nats.server.url)
    try:
        data = json.dumps({"job_id": "bad", "outcome": "done", "prompt": "a secret"}).encode()
        headers = {TAG_HEADER: tag(client.job_secret("bad"), data)}
        await worker.jetstream().publish(result_subject("bad"), data, headers=headers)
    finally:
        await worker.close()
    await client.drop_copies(["bad"])
    assert await stored_result(nats.server.url, "bad") == ResultMessage(
        "bad", Outcome.FAILED, BOT_REPORTER, 0
    )


class JobDelivery:
    """The job message a worker finishes: only acknowledged."""

    def __init__(self) -> None:
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


async def test_a_second_render_of_a_job_leaves_the_pictures_of_the_stored_result(
    nats: NatsTransport,
) -> None:
    """Worker A stored the job's pictures and published its result; B, the redelivery that
    A's lapsed heartbeats let in, rendered the job too. B's publish is refused and B's
    pictures go; A's, which the stored result names, stay, and the bot collects them."""
    client = await nats.client()
    request = RenderRequest("noise", seed=3)
    secret = client.job_secret("twice")
    config = worker_module.WorkerConfig(nats.server.url, ("gpu-0",))
    rendered = []
    for delivery in (1, 2):  # A, then B
        worker = await nats_client.connect(nats.server.url)
        hub = worker_module._Hub(worker, worker.jetstream())
        loop = worker_module._DeviceLoop(hub, "gpu-0", lambda _: NoisyEngine(), config)
        (image,) = NoisyEngine().render(request)
        job = JobDelivery()
        result = ResultMessage("twice", Outcome.DONE, f"worker-{delivery}", delivery)
        try:
            await loop._finish(cast(Msg, job), secret, result, None, [image])
        finally:
            await worker.close()
        assert job.acked
        rendered.append(image)

    (kept,) = await stored_object_names(nats.server.url)  # B's left only a tombstone
    assert kept.startswith("twice/1-")
    assert (await stored_result(nats.server.url, "twice")).worker == "worker-1"
    (collected,) = await client.render("twice", request, None, None)
    assert collected.png == rendered[0].png
