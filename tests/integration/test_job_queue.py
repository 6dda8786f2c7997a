"""The in-process queue on a real SQLite file, with an engine that needs no torch.

What must hold for every transport (done, delivered once, refunds, cancel) is tested for the
in-process queue and NATS alike in ``tests/distributed/test_queue_transports.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import (
    MAX_RENDER_ATTEMPTS,
    FinishedJob,
    JobQueue,
    QuotaExceeded,
    Submission,
)
from bot.jobs.queue import job_queue as queue_module
from bot.jobs.queue.values import INTERNAL_FAILURE
from bot.jobs.scheduler import PriorityClass
from bot.metrics import METRICS_REGISTRY
from bot.policy.quota import Period, period_start
from cogs.results.posting import result_png
from db import jobs as journal
from db import quotas as ledger
from inference.infotext import infotext_from_png
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.sinks import RecordingSink, started_queue


def local_slots(engine: InstantEngine) -> list[DeviceWorker]:
    return [DeviceWorker("cpu", lambda _: engine)]


def _jobs_counted(kind: str, outcome: str) -> float:
    """``easel_jobs_total`` for ``kind`` and ``outcome`` (0 before its first count)."""
    return (
        METRICS_REGISTRY.get_sample_value("easel_jobs_total", {"kind": kind, "outcome": outcome})
        or 0.0
    )


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
    # Plain words and the job id for its member; the error's class for the operator, in the
    # log line that names the job (with its traceback).
    told = sink.delivered[0].error
    assert told is not None and "RuntimeError" not in told
    assert told.startswith("Something went wrong on Easel's side while rendering")
    assert told == f"{INTERNAL_FAILURE}; reference {job_id}"
    assert f"job {job_id} failed on " in caplog.text
    assert "internal error (RuntimeError)" in caplog.text
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


async def test_a_job_the_process_died_during_too_often_fails_and_one_that_died_once_renders_alone(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_queue(conn, tmp_path, InstantEngine())
    # Four members' (one member's would start two at a time), each a partner for the others.
    poison, crashed_once, *fresh = [
        await first.submit(dataclasses.replace(submission(seed=s), user_id=s)) for s in (1, 2, 3, 4)
    ]
    # Each start renders the poison job and dies: requeued while it has tries left.
    for _ in range(MAX_RENDER_ATTEMPTS - 1):
        await journal.mark_running(conn, [poison], 0.0)
        assert await journal.requeue_running(conn, MAX_RENDER_ATTEMPTS) == (1, [])
    await journal.mark_running(conn, [poison, crashed_once], 0.0)  # its last try, with a partner

    engine = InstantEngine()
    failed_before = _jobs_counted("imagine", "failed")
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(4)
    await queue.stop()
    assert sorted(request.seed for request in engine.rendered) == [2, 3, 4]
    assert sorted(engine.batches) == [1, 2]  # the job that crashed once, with no partner
    [failed] = [job for job in sink.delivered if not job.succeeded]
    assert failed.job_id == poison and failed.error is not None
    # /metrics counts it under its kind, as its journal row, log and notice name it (AUD26 F4).
    assert _jobs_counted("imagine", "failed") - failed_before == 1
    assert failed.error.startswith(f"failed after {MAX_RENDER_ATTEMPTS} tries: Easel stopped")
    assert await ledger.refunded(conn, poison)
    assert poison in caplog.text  # the log names it
    for job_id in (crashed_once, *fresh):
        record = await journal.get_job(conn, job_id)
        assert record is not None and record.status is journal.JobStatus.DONE


async def test_a_process_that_died_under_a_batch_costs_its_jobs_no_attempt_but_alone_after(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The process died while a batch of two members' jobs rendered (a crash, or a device still
    stuck at the stop): which one took it down is not known, so neither spends an attempt,
    and each renders alone from then on. A job the process died under alone keeps its attempt
    counted, so a poison job still fails at its 3rd render alone (review R_L5, finding 5)."""
    first = make_queue(conn, tmp_path, InstantEngine())
    poison, mate, *_ = [
        await first.submit(dataclasses.replace(submission(seed=s), user_id=s)) for s in (1, 2, 3, 4)
    ]
    await journal.mark_running(conn, [poison, mate], 1.0)  # one batch: one start time
    assert await journal.requeue_running(conn, MAX_RENDER_ATTEMPTS) == (2, [])
    batch = [await journal.get_job(conn, job_id) for job_id in (poison, mate)]
    assert [(job.attempts, job.renders_alone) for job in batch if job] == [(0, True), (0, True)]
    # Then the poison alone at each start, the process dying under it each time.
    for start in range(MAX_RENDER_ATTEMPTS - 1):
        await journal.mark_running(conn, [poison], 2.0 + start)
        assert await journal.requeue_running(conn, MAX_RENDER_ATTEMPTS) == (1, [])
    await journal.mark_running(conn, [poison], 9.0)  # its third render alone

    engine = InstantEngine()
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(4)
    await queue.stop()
    assert sorted(request.seed for request in engine.rendered) == [2, 3, 4]
    assert sorted(engine.batches) == [1, 2]  # its batch-mate alone, the two fresh together
    [failed] = [job for job in sink.delivered if not job.succeeded]
    assert failed.job_id == poison
    record = await journal.get_job(conn, mate)
    assert record is not None and record.status is journal.JobStatus.DONE
    assert record.attempts == 1  # the render that made its pictures


async def test_each_batch_starts_at_a_time_of_its_own_though_the_clock_stands_still(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The journal tells a batch's jobs by their start time (``requeue_running``): two
    batches never share one, also while the queue's clock stands still (a wall clock stepped
    back, or one too coarse to tell two starts apart)."""
    queue = JobQueue(conn, local_slots(InstantEngine()), tmp_path / "images", clock=lambda: 5.0)
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    # Two members' jobs of two sizes: never one batch.
    jobs = [
        await queue.submit(
            Submission(
                kind="imagine",
                request=RenderRequest("a cat", seed=1, steps=2, width=size, height=size),
                user_id=size,
            )
        )
        for size in (64, 128)
    ]
    await sink.wait_for(2)
    await queue.stop()
    records = [await journal.get_job(conn, job_id) for job_id in jobs]
    first, second = sorted(record.started_at or 0.0 for record in records if record)
    assert 5.0 <= first < second


class HeldDevice(DeviceWorker):
    """A device whose render is held until the device closes: after ``stop()`` gave it up."""

    def __init__(self, engine: HeldEngine) -> None:
        super().__init__("cpu", lambda _: engine)
        self.engine = engine

    def close(self) -> None:
        self.engine.released.set()
        super().close()


async def test_renders_a_graceful_stop_abandons_are_no_attempts(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_S", 0.05)
    first = make_queue(conn, tmp_path, InstantEngine())
    # Two members' jobs, partners in one batch.
    jobs = [await first.submit(dataclasses.replace(submission(seed=s), user_id=s)) for s in (1, 2)]

    async def attempts() -> list[int]:
        records = [await journal.get_job(conn, job_id) for job_id in jobs]
        return [record.attempts for record in records if record is not None]

    # As many deploys during the render as a job has tries.
    for _ in range(MAX_RENDER_ATTEMPTS):
        device = HeldDevice(HeldEngine())
        queue, _ = await started_queue(conn, [device], tmp_path / "images")
        assert await asyncio.to_thread(device.engine.started.wait, 10)
        assert await attempts() == [1, 1]  # what a kill leaves: the next start counts it
        await queue.stop()
        assert await attempts() == [0, 0]

    engine = InstantEngine()
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await sink.wait_for(2)
    await queue.stop()
    assert all(job.succeeded for job in sink.delivered)
    assert engine.batches == [2]  # still partners: neither took a process down


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


class HeldSink(RecordingSink):
    """Holds the delivery of one prompt's job (an upload to Discord that takes its time)."""

    def __init__(self, held_prompt: str) -> None:
        super().__init__()
        self.held_prompt = held_prompt
        self.release = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        if job.request.prompt == self.held_prompt:
            await self.release.wait()
        return await super().deliver(job)


async def test_a_slow_delivery_does_not_hold_the_other_jobs_of_its_batch(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = InstantEngine(seconds=0.3)
    queue = make_queue(conn, tmp_path, engine)
    sink = HeldSink(held_prompt="cat 0")
    queue.set_sink(sink)
    await queue.start()
    await queue.submit(dataclasses.replace(submission("dog", seed=9), user_id=200))
    for user in range(3):  # they arrive while the dog renders: one batch of three
        await queue.submit(dataclasses.replace(submission(f"cat {user}", user), user_id=100 + user))
    await sink.wait_for(3)
    assert engine.batches == [1, 3]
    assert sorted(job.request.prompt for job in sink.delivered) == ["cat 1", "cat 2", "dog"]
    sink.release.set()
    await sink.wait_for(4)
    await queue.stop()
    assert sink.delivered[-1].request.prompt == "cat 0"


async def ledger_kinds(conn: aiosqlite.Connection, job_id: str) -> set[str]:
    async with conn.execute("SELECT kind FROM quota_ledger WHERE job_id = ?", (job_id,)) as rows:
        return {kind for (kind,) in await rows.fetchall()}


async def test_one_jobs_failed_record_loses_nothing_of_its_batch_mates(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # Stands in for a full disk at one job's record: its transaction rolls back. Its
    # batch-mates' own writes (charge, delivered) must not have joined that transaction.
    await conn.execute(
        "CREATE TRIGGER full_disk BEFORE UPDATE OF status ON jobs "
        "WHEN NEW.status = 'done' AND NEW.request_json LIKE '%victim%' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    engine = InstantEngine(seconds=0.3)
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await queue.submit(dataclasses.replace(submission("dog"), user_id=200))
    mates = []
    for user in range(4):  # they arrive while the dog renders: one batch of four
        prompt = "victim" if user == 2 else f"cat {user}"
        job_id = await queue.submit(dataclasses.replace(submission(prompt, user), user_id=user))
        if user != 2:
            mates.append(job_id)
    await sink.wait_for(5)
    await queue.stop()
    assert engine.batches == [1, 4]
    for job_id in mates:
        record = await journal.get_job(conn, job_id)
        assert record is not None
        assert (record.status, record.delivered_at is not None) == (journal.JobStatus.DONE, True)
        assert "commit" in await ledger_kinds(conn, job_id)


async def test_a_grid_is_composed_from_the_pixels_while_the_pictures_are_stored(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # The PNGs are still encoding when the render returns, as on the engine's PNG pool.
    engine = InstantEngine(encode_seconds=0.2)
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    await queue.submit(submission("a cat", seed=5, count=4))
    await queue.submit(submission("a dog", seed=9))
    await sink.wait_for(2)
    await queue.stop()
    grid = next(job for job in sink.delivered if job.request.prompt == "a cat")
    single = next(job for job in sink.delivered if job.request.prompt == "a dog")
    assert single.composed is None  # posted as its one stored picture
    assert grid.composed is not None
    # The very PNG the delivery would compose from the stored files after a restart.
    assert grid.composed == result_png(dataclasses.replace(grid, composed=None))
    assert infotext_from_png(grid.composed).endswith("Grid: 4 images, Grid seeds: 5 6 7 8")


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
    # Submitted second, but its priority survived the restart: it renders first (the two
    # jobs of a batch are then delivered in whichever order their uploads finish).
    assert {job.job_id for job in sink.delivered} == {urgent, relaxed}
    assert [request.seed for request in engine.rendered] == [2, 1]


async def test_the_iterations_metric_counts_the_steps_the_render_ran(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = {"model": "few-steps", "device": "cpu"}

    def sample(name: str) -> float:
        return METRICS_REGISTRY.get_sample_value(name, labels) or 0.0

    engine = InstantEngine()
    drawn = engine._pictures
    # 4 steps run whatever was asked, as a few-step model's fast preset does.
    four = [dataclasses.replace(image, steps_run=4) for image in drawn(submission().request)]
    monkeypatch.setattr(engine, "_pictures", lambda request: [*four, *drawn(request)[1:]])
    queue, sink = await started_queue(conn, local_slots(engine), tmp_path / "images")
    before = sample("easel_render_seconds_sum")
    asked = dataclasses.replace(submission().request, steps=20, model="few-steps")
    await queue.submit(dataclasses.replace(submission(), request=asked))
    await sink.wait_for(1)
    await queue.stop()
    seconds = sample("easel_render_seconds_sum") - before
    assert sample("easel_render_iterations_per_second") * seconds == pytest.approx(4)
