"""The job queue's promises, kept the same whether renders run in-process or on NATS workers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from bot.jobs.accounting import Member
from bot.jobs.queue import MAX_RENDER_ATTEMPTS, CancelOutcome, JobQueue, Submission
from bot.jobs.queue import job_queue as queue_module
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.infotext import infotext_from_png
from inference.types import (
    ProgressCallback,
    RenderedImage,
    RenderFailed,
    RenderRequest,
    StepProgress,
)
from tests.distributed.transports import NatsTransport, Transport
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

USER, GUILD = 7, 5


def submission(prompt: str = "a cat", seed: int = 1, count: int = 1, steps: int = 2) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest(prompt, seed=seed, count=count, steps=steps),
        user_id=USER,
        guild_id=GUILD,
    )


async def images_used_today(conn: aiosqlite.Connection) -> int:
    return (await ledger.usage(conn, USER, GUILD, period_start(Period.DAY, time.time()))).images


async def test_job_runs_is_charged_and_delivered_once(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    queue, sink = await started_queue(
        conn, await transport.slots(InstantEngine()), tmp_path / "images"
    )
    job_id = await queue.submit(submission(count=2, seed=40))
    await sink.wait_for(1)
    await queue.stop()

    finished = sink.delivered[0]
    assert finished.job_id == job_id and finished.succeeded
    assert [image.seed for image in finished.images] == [40, 41]
    infotext = infotext_from_png(finished.images[1].path.read_bytes())
    assert infotext is not None and "Seed: 41" in infotext
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.DONE
    # A render attempt of this process; the broker counts its own (its deliveries).
    assert record.attempts == (0 if transport.name == "nats" else 1)
    assert record.delivered_at is not None
    assert await images_used_today(conn) == 2

    # A second start (same database, new slots) finds nothing left to run or deliver.
    engine = InstantEngine()
    queue, sink = await started_queue(conn, await transport.slots(engine), tmp_path / "images")
    await asyncio.sleep(0.2)
    await queue.stop()
    assert sink.delivered == [] and engine.rendered == []


async def test_engine_failure_is_reported_and_refunded(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    queue, sink = await started_queue(
        conn, await transport.slots(InstantEngine(fail_on="boom")), tmp_path / "images"
    )
    job_id = await queue.submit(submission(prompt="boom"))
    await sink.wait_for(1)
    await queue.stop()
    assert not sink.delivered[0].succeeded
    assert sink.delivered[0].error is not None and job_id in sink.delivered[0].error
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.FAILED
    assert await images_used_today(conn) == 0


class RaisingEngine(InstantEngine):
    """Raises ``error`` for every render, as an engine hitting a bug or a bad model file."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        raise self.error


async def member_told(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport, error: Exception
) -> tuple[str, str | None]:
    """A job whose render raises ``error``: its id, and what its member is told."""
    queue, sink = await started_queue(
        conn, await transport.slots(RaisingEngine(error)), tmp_path / "images"
    )
    job_id = await queue.submit(submission())
    await sink.wait_for(1)
    await queue.stop()
    return job_id, sink.delivered[0].error


async def test_an_engine_bug_reaches_its_member_as_plain_words_without_server_paths(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    bug = OSError("cannot read /srv/easel/models/secret.safetensors")
    job_id, told = await member_told(conn, tmp_path, transport, bug)
    assert told is not None and job_id in told and "went wrong on Easel's side" in told
    assert "secret.safetensors" not in told and "OSError" not in told


async def test_a_render_failure_worded_for_members_reaches_them_as_it_is(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    worded = RenderFailed("VAE anime.safetensors does not fit this model")
    job_id, told = await member_told(conn, tmp_path, transport, worded)
    assert told == f"{worded}; reference {job_id}"


async def test_cancelling_a_queued_job_refunds_and_tells_the_owner(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    engine = InstantEngine()
    queue = JobQueue(conn, await transport.slots(engine), tmp_path / "images")  # not started
    sink = RecordingSink()
    queue.set_sink(sink)
    job_id = await queue.submit(submission())
    assert await images_used_today(conn) == 1
    state = await queue.state(job_id)
    assert state is not None and state.position == 0
    assert await queue.cancel(job_id, Member(USER + 1, GUILD)) is CancelOutcome.NOT_YOURS
    assert await queue.cancel(job_id, Member(USER, GUILD)) is CancelOutcome.CANCELLED
    assert await queue.cancel(job_id, Member(USER, GUILD)) is CancelOutcome.FINISHED
    assert await images_used_today(conn) == 0
    assert sink.delivered[0].job_id == job_id and sink.delivered[0].error == "cancelled"
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.CANCELLED
    await queue.start()
    await asyncio.sleep(0.2)
    await queue.stop()
    assert engine.rendered == [] and len(sink.delivered) == 1


async def test_cancelling_a_running_job_stops_it_within_a_step(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    preview = b"\xff\xd8 a JPEG preview \x00\xff"
    engine = InstantEngine(seconds=30.0, preview=preview)
    queue, sink = await started_queue(conn, await transport.slots(engine), tmp_path / "images")
    steps: list[int] = []
    first_step = asyncio.Event()

    def on_progress(job_id: str, step: StepProgress) -> None:
        steps.append(step.step)
        assert step.preview == preview  # previews cross the broker intact
        first_step.set()

    queue.set_progress_listener(on_progress)
    job_id = await queue.submit(submission(prompt="slow", steps=50))
    async with asyncio.timeout(30):
        await first_step.wait()
    assert await queue.cancel(job_id, Member(USER, GUILD)) is CancelOutcome.STOPPING
    await sink.wait_for(1)
    await queue.stop()
    assert sink.delivered[0].error == "cancelled"
    assert 0 < len(steps) < 50
    assert await images_used_today(conn) == 0


async def test_several_jobs_each_render_and_deliver_once(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    jobs = 6
    engine = InstantEngine(seconds=0.02)
    queue, sink = await started_queue(conn, await transport.slots(engine), tmp_path / "images")
    submitted = [await queue.submit(submission(seed=seed)) for seed in range(jobs)]
    await sink.wait_for(jobs)
    await queue.stop()
    assert sorted(job.job_id for job in sink.delivered) == sorted(submitted)
    assert sorted(request.seed for request in engine.rendered) == list(range(jobs))


async def test_a_remote_job_cancelled_while_it_waits_for_a_worker_is_not_charged(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marked_running: dict[str, asyncio.Event] = {}
    mark_running = journal.mark_running

    async def noted_mark_running(
        db: aiosqlite.Connection,
        job_ids: Iterable[str],
        now: float,
        *,
        counts_attempt: bool,
        running_still: Collection[str],
    ) -> list[journal.JobRecord]:
        ids = list(job_ids)
        marked = await mark_running(
            db, ids, now, counts_attempt=counts_attempt, running_still=running_still
        )
        for job_id in ids:
            marked_running.setdefault(job_id, asyncio.Event()).set()
        return marked

    monkeypatch.setattr(journal, "mark_running", noted_mark_running)
    engine = InstantEngine(seconds=5.0)  # 0.1 s a step
    client = await nats.client(slots=2)  # two jobs in flight, one worker device
    nats.start_worker(engine)
    queue, sink = await started_queue(conn, client.slots(), tmp_path / "images")
    stepped: dict[str, asyncio.Event] = {}
    queue.set_progress_listener(
        lambda job_id, _step: stepped.setdefault(job_id, asyncio.Event()).set()
    )
    waiter, worker_busy = USER + 1, USER
    try:
        busy = await queue.submit(submission(prompt="busy", steps=50))
        async with asyncio.timeout(10):
            await stepped.setdefault(busy, asyncio.Event()).wait()
        waiting = await queue.submit(replace(submission(prompt="waits", steps=50), user_id=waiter))
        async with asyncio.timeout(10):  # sent to the broker: running, but not on a device
            await marked_running.setdefault(waiting, asyncio.Event()).wait()
        assert await queue.cancel(waiting, Member(waiter, GUILD)) is CancelOutcome.STOPPING
        await sink.wait_for(1)
        assert await queue.cancel(busy, Member(worker_busy, GUILD)) is CancelOutcome.STOPPING
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert waiting not in stepped  # no worker reported a step of it
    day = period_start(Period.DAY, time.time())
    assert await ledger.usage(conn, waiter, GUILD, day) == ledger.Usage(0, 0.0)
    # The job a worker was rendering still pays the time since its first report.
    assert (await ledger.usage(conn, worker_busy, GUILD, day)).gpu_seconds > 0


async def test_bot_restarts_while_a_job_waits_for_a_worker_are_no_render_attempts(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_S", 0.05)
    marked, mark_running = asyncio.Event(), journal.mark_running

    async def noted_mark_running(
        db: aiosqlite.Connection,
        job_ids: Iterable[str],
        now: float,
        *,
        counts_attempt: bool,
        running_still: Collection[str],
    ) -> list[journal.JobRecord]:
        started = await mark_running(
            db, job_ids, now, counts_attempt=counts_attempt, running_still=running_still
        )
        marked.set()
        return started

    monkeypatch.setattr(journal, "mark_running", noted_mark_running)
    job_id = None
    # No worker yet: the job waits in the stream through more bot starts than a job has tries.
    for _ in range(MAX_RENDER_ATTEMPTS + 1):
        marked.clear()
        client = await nats.client()
        queue, _ = await started_queue(conn, client.slots(), tmp_path / "images")
        job_id = job_id or await queue.submit(submission())
        await asyncio.wait_for(marked.wait(), 10)
        record = await journal.get_job(conn, job_id)
        assert record is not None and record.status is journal.JobStatus.RUNNING
        assert record.attempts == 0  # what a crash of the bot now leaves: nothing counted
        await queue.stop()
        await client.close()

    nats.start_worker(InstantEngine())
    queue, sink = await started_queue(conn, (await nats.client()).slots(), tmp_path / "images")
    await sink.wait_for(1)
    await queue.stop()
    assert sink.delivered[0].job_id == job_id and sink.delivered[0].succeeded


async def test_the_journal_names_files_inside_the_data_folder_wherever_they_render(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    """A broker worker's pictures are written by the bot, as a local device's are: the journal
    names the upload a job reads and the pictures it made by their path inside the data
    folder, so that the folder moved before the next start still has them."""
    data = tmp_path / "data"
    (data / "inputs").mkdir(parents=True)
    upload = data / "inputs" / "upload.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(upload)
    queue, sink = await started_queue(conn, await transport.slots(InstantEngine()), data / "images")
    request = RenderRequest("a cat", seed=3, steps=2, mode="img2img", init_image=str(upload))
    job_id = await queue.submit(replace(submission(), request=request))
    await sink.wait_for(1)
    await queue.stop()
    assert sink.delivered[0].succeeded
    record = await journal.get_job(conn, job_id)
    assert record is not None
    assert json.loads(record.request_json)["init_image"] == "inputs/upload.png"
    images = await journal.images_of(conn, job_id)
    assert [image.path for image in images] == [f"images/{job_id}/0.png"]

    moved = tmp_path / "moved"
    data.rename(moved)
    read_back = await JobQueue(conn, [], moved / "images").request_of(job_id)
    assert read_back is not None and read_back.init_image == str(moved / "inputs" / "upload.png")
