"""The running queue's delivery sweep: a result whose posts fail for a while is posted once
Discord takes it again, with no restart, and once only; one that cannot be posted (failing
past the bound, or refused for good) is failed, refunded, and its failure posted in its place;
a sweep posts in the job's lane, never beside a live delivery of it. Real SQLite, a device
thread, a sink standing in for Discord; the sweep's intervals scaled down."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import DeliveryRetries, FinishedJob, JobQueue
from bot.jobs.queue import delivery as job_delivery
from db import jobs as journal
from db import quotas as ledger
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.integration.test_delivery_lifecycle import submission
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

# Each sweep looks every 20 ms; the waits are 10 ms doubling to 50 ms.
QUICK = DeliveryRetries(
    sweep_every_s=0.02, first_wait_s=0.01, longest_wait_s=0.05, give_up_after_s=600.0
)


class DiscordError(Exception):
    """What discord.py raises for an answer of ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{status}: Discord answered")
        self.status = status


class DownSink(RecordingSink):
    """Its posts of a picture fail with ``failures[job_id]``'s error while its count lasts
    (a failure, with no picture, always posts); it counts tries and posts at once in flight,
    and notes from when each try looks for an earlier try's post."""

    def __init__(self, failures: dict[str, tuple[Exception, int]]) -> None:
        super().__init__()
        self.failures = failures
        self.tries: Counter[str] = Counter()
        self.looked_from: dict[str, list[float | None]] = {}
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.tries[job.job_id] += 1
        self.looked_from.setdefault(job.job_id, []).append(job.post_attempted_at)
        self.in_flight[job.job_id] += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight[job.job_id])
        try:
            await self.release.wait()
            error, times = self.failures.get(job.job_id, (None, 0))
            if error is not None and job.succeeded and self.tries[job.job_id] <= times:
                raise error
            return await super().deliver(job)
        finally:
            self.in_flight[job.job_id] -= 1


def queue_on(conn: aiosqlite.Connection, images: Path, retries: DeliveryRetries) -> JobQueue:
    return JobQueue(
        conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images, delivery_retries=retries
    )


@pytest.fixture(autouse=True)
def no_waits_in_the_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", (0.0, 0.0))


async def test_a_result_posts_once_discord_is_back_without_a_restart(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = queue_on(conn, tmp_path / "images", QUICK)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1, "a barn"))
        # Down for two deliveries of three tries each (the lane's own, then a sweep's).
        sink = DownSink({job_id: (ConnectionError("Discord unreachable"), 6)})
        queue.set_sink(sink)
        await sink.wait_for(1)
        await asyncio.sleep(0.3)  # a dozen sweeps more: none posts it again
    finally:
        await queue.stop()
    assert [job.job_id for job in sink.delivered] == [job_id]
    assert sink.tries[job_id] == 7
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.delivered_at is not None
    assert job.delivery_tries == 2
    # An outage fails every delivery for its length: a line each, with no traceback.
    failed = [r for r in caplog.records if "delivery failed" in r.getMessage()]
    assert len(failed) == 6 and not any(record.exc_info for record in failed)


async def test_a_result_that_cannot_be_posted_is_failed_refunded_and_its_maker_told(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("its result cannot be posted")
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)
    refused = await journaling.submit(submission(1, "refused for good"))
    down = await journaling.submit(submission(2, "never taken"))
    broken = await journaling.submit(submission(3, "a bug in its post"))
    sink = DownSink(
        {
            refused: (DiscordError(400), 99),
            down: (DiscordError(503), 99),
            broken: (RuntimeError("a bug"), 99),
        }
    )
    # Failing 0.2 s is failing too long here.
    queue = queue_on(conn, images, dataclasses.replace(QUICK, give_up_after_s=0.2))
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(3)
    finally:
        await queue.stop()
    told = {job.job_id: job for job in sink.delivered}
    assert sorted(told) == sorted([refused, down, broken])
    assert told[refused].error == (
        "the result could not be posted (Discord refused it with error 400), so it does not "
        f"count against your quota; reference {refused}"
    )
    assert (told[down].error or "").startswith(
        "the result could not be posted (Discord did not take it for"
    )
    # Not Discord's doing: not said to be.
    assert (told[broken].error or "").startswith(
        "the result could not be posted (Easel's tries failed for"
    )
    assert sink.tries[refused] == 2  # refused at once: not tried again
    for job_id in (refused, down, broken):
        assert not told[job_id].succeeded
        assert await ledger.refunded(conn, job_id)
        assert await journal.images_of(conn, job_id) == []
        assert not (tmp_path / "images" / job_id).exists()


async def test_the_sweep_posts_in_the_jobs_lane_never_beside_a_live_delivery(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)
    job_id = await journaling.submit(submission(1, "posted after a restart"))
    # The previous process rendered it and its post failed: its next try is due now.
    await journal.mark_done(conn, job_id, [], 1.0, 0.0)
    await journal.delivery_failed(conn, job_id, 0.0, 0.0)

    queue = queue_on(conn, images, QUICK)
    sink = DownSink({})
    sink.release.clear()  # the start's delivery holds while sweeps come and go
    queue.set_sink(sink)
    await queue.start()
    try:
        await asyncio.sleep(0.3)
        sink.release.set()
        await sink.wait_for(1)
        await asyncio.sleep(0.1)
    finally:
        await queue.stop()
    assert sink.tries[job_id] == 1 and sink.most_in_flight == 1


async def test_each_try_looks_for_the_post_of_the_try_before_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue = queue_on(conn, tmp_path / "images", QUICK)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1, "a barn"))
        sink = DownSink({job_id: (ConnectionError("Discord unreachable"), 5)})
        queue.set_sink(sink)
        await sink.wait_for(1)
    finally:
        await queue.stop()
    first, *later = sink.looked_from[job_id]
    assert first is None and len(later) == 5
    # Each from the try just before it, not from the first: a later try may be the one that
    # landed, hours and a busy channel's hundred messages after the first.
    assert all(a is not None and b is not None and a < b for a, b in itertools.pairwise(later))
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.post_attempted_at is not None
    assert later[-1] is not None and job.post_attempted_at > later[-1]


async def test_only_a_missing_picture_fails_a_delivery_at_once_not_another_os_error(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    error_logs.expect("its result cannot be posted")
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)
    unreadable = await journaling.submit(submission(1, "restored with the wrong owner"))
    missing = await journaling.submit(submission(2, "its file deleted"))
    sink = DownSink(
        {
            unreadable: (PermissionError(13, "Permission denied"), 4),
            missing: (FileNotFoundError(2, "No such file or directory"), 99),
        }
    )
    queue = queue_on(conn, images, QUICK)
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    told = {job.job_id: job for job in sink.delivered}
    assert told[unreadable].succeeded and sink.tries[unreadable] == 5
    assert not told[missing].succeeded
    assert "(its stored picture is missing)" in (told[missing].error or "")


class TokenResetSink(DownSink):
    """Every post refused as Discord refuses a bot token the operator reset (401, code 0)."""

    def __init__(self) -> None:
        super().__init__({})
        self.refused = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.tries[job.job_id] += 1
        self.refused.set()
        raise DiscordError(401)


async def test_a_refused_bot_token_keeps_every_outcome_for_the_next_start(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("Discord refused the bot token")
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)
    # Ended before this start, undelivered: a result and a failure.
    rendered = await journaling.submit(submission(1, "posted after the token's reset"))
    picture = journal.ImageRecord(rendered, 0, 1, str(images / rendered / "0.png"), "", 64, 64)
    await journal.mark_done(conn, rendered, [picture], 1.0, 0.0)
    ended = await journaling.submit(submission(2, "its failure told after it"))
    await journal.mark_failed(conn, ended, "the device failed", 1.0)
    reset = TokenResetSink()
    checks: list[int] = []

    async def refused_check() -> bool:  # as the bot's: Discord refuses the token too
        checks.append(1)
        return False

    # Failing 0.2 s would be failing too long: the token's refusal is never counted so.
    queue = queue_on(conn, images, dataclasses.replace(QUICK, give_up_after_s=0.2))
    queue.set_token_check(refused_check)
    queue.set_sink(reset)
    await queue.start()
    try:
        async with asyncio.timeout(20):
            await reset.refused.wait()
        await asyncio.sleep(0.4)  # twenty sweeps: none tries again
    finally:
        await queue.stop()
    # Nothing tried again, nor begun once the token was refused (both may have been in
    # flight); said once.
    assert max(reset.tries.values()) == 1 and checks == [1]
    refusals = [r for r in error_logs.records if "refused the bot token" in r.getMessage()]
    assert len(refusals) == 1
    for job_id in (rendered, ended):
        job = await journal.get_job(conn, job_id)
        assert job is not None and job.delivered_at is None and job.delivery_retry_at is None
    job = await journal.get_job(conn, rendered)
    assert job is not None and job.status is journal.JobStatus.DONE
    assert not await ledger.refunded(conn, rendered)
    assert await journal.images_of(conn, rendered) == [picture]

    # The next start, with a valid token: both go out, the result with its picture.
    sink = DownSink({})
    queue = queue_on(conn, images, QUICK)
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    told = {job.job_id: job for job in sink.delivered}
    assert told[rendered].succeeded and len(told[rendered].images) == 1
    assert not told[ended].succeeded and told[ended].error == "the device failed"


async def posts_refused_with_401(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    check: Callable[[], Awaitable[bool]],
    jobs: int,
    refusals: int,
) -> tuple[DownSink, list[str]]:
    """``jobs`` results rendered at once, each post refused with a 401 (not the token's)
    ``refusals`` times, the queue asking ``check`` of the token; once every one is posted."""
    queue = queue_on(conn, tmp_path / "images", QUICK)
    queue.set_token_check(check)
    sink = DownSink({})
    sink.release.clear()
    queue.set_sink(sink)
    await queue.start()
    try:
        made = [
            await queue.submit(submission(number, f"p{number}")) for number in range(1, jobs + 1)
        ]
        sink.failures.update({job_id: (DiscordError(401), refusals) for job_id in made})
        sink.release.set()
        async with asyncio.timeout(20):
            await sink.wait_for(jobs)
    finally:
        await queue.stop()
    return sink, made


async def test_a_burst_of_401s_asks_discord_about_the_token_once(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Eight posts refused with a 401 at once (not the token's): one check, whose "taken" the
    others trust, not eight one after another; each post then goes out."""
    checks: list[float] = []

    async def check() -> bool:
        checks.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)  # application_info's round trip
        return True

    sink, jobs = await posts_refused_with_401(conn, tmp_path, check, jobs=8, refusals=1)
    assert len(checks) == 1
    assert all(sink.tries[job_id] == 2 for job_id in jobs)


async def taken() -> bool:
    return True


async def test_a_401_while_discord_takes_the_token_is_tried_again_until_it_posts(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A post refused with a 401 past its lane's tries while Discord takes the bot token (its
    check says so): a refusal of the bot's that passes (Discord's own glitch, or a reset racing
    the check), never the post's own, so the sweep tries it again until it posts; the result
    is neither failed nor refunded, its picture kept."""
    sink, (job_id,) = await posts_refused_with_401(conn, tmp_path, taken, jobs=1, refusals=5)
    (told,) = sink.delivered
    assert told.succeeded and len(told.images) == 1
    assert sink.tries[job_id] == 6  # the lane's three, then the sweep's until the sixth
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.status is journal.JobStatus.DONE
    assert job.delivered_at is not None and not await ledger.refunded(conn, job_id)
    assert (tmp_path / "images" / job_id).is_dir()


class NoticeRefusedOnce(DownSink):
    """Its first post of a job's failure (a notice, with no picture) is refused with a 401."""

    async def deliver(self, job: FinishedJob) -> int | None:
        if not job.succeeded and not self.tries[job.job_id]:
            self.tries[job.job_id] += 1
            raise DiscordError(401)
        return await super().deliver(job)


async def test_a_failures_notice_refused_with_a_401_is_tried_again_and_told(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A failed job's notice (posted once, outside the lane's tries) refused with a 401 while
    Discord takes the token: kept for the sweep, which tells its maker; never given up."""
    queue = JobQueue(
        conn,
        [DeviceWorker("cpu", lambda _: InstantEngine(fail_on="boom"))],
        tmp_path / "images",
        delivery_retries=QUICK,
    )
    queue.set_token_check(taken)
    sink = NoticeRefusedOnce({})
    queue.set_sink(sink)
    await queue.start()
    try:
        job_id = await queue.submit(submission(1, "a boom barn"))
        await sink.wait_for(1)
    finally:
        await queue.stop()
    (told,) = sink.delivered
    assert told.job_id == job_id and not told.succeeded
    assert sink.tries[job_id] == 2


async def test_a_token_check_with_no_answer_is_bounded_and_shared_and_the_posts_tried_again(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check Discord does not answer (discord.py waits out 5xx retries and 429s) ends at its
    bound, as a failed check, which the other 401s meanwhile trust rather than each waiting
    out their own: the posts are tried again, not failed, not held."""
    monkeypatch.setattr(job_delivery, "TOKEN_CHECK_TIMEOUT_S", 0.1)
    asked: list[int] = []

    async def check() -> bool:
        asked.append(1)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sink, jobs = await posts_refused_with_401(conn, tmp_path, check, jobs=4, refusals=2)
    assert len(asked) == 1 and all(sink.tries[job_id] == 3 for job_id in jobs)
    for job_id in jobs:
        job = await journal.get_job(conn, job_id)
        assert job is not None and job.delivered_at is not None
