"""What Easel stores, and for how long: a storage failure fails its job, retention prunes,
/forget-me erases and anonymises. The real queue on a real SQLite file with an engine that
needs no torch, real files under a data folder, and a fixed clock."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from bot.history import Forgotten, History, PostedMessage
from bot.jobs.queue import JobQueue, Submission
from bot.jobs.retention import Pruned, Retention
from bot.policy.member_settings import MemberSettings
from bot.user_errors import UserError
from db import jobs as journal
from db import quotas as ledger
from db.history import count_rows_of_user
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

# A Wednesday: its week began on Monday the 14th, its month on the 1st; both end by 2027.
NOW = datetime(2026, 12, 16, 12, tzinfo=UTC).timestamp()
END_OF_THE_MONTH = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
DAY = 86400.0
MEMBER, GUILD = 7, 5


def submission(
    *, at: float, upload: Path | None = None, user_id: int = MEMBER, token: str = "secret"
) -> Submission:
    return Submission(
        kind="vary" if upload else "imagine",
        request=RenderRequest("a cat", seed=1, steps=2, init_image=str(upload) if upload else None),
        user_id=user_id,
        guild_id=GUILD,
        channel_id=9,
        application_id=1,
        interaction_token=token,
        interaction_created_at=at,
    )


async def usage(conn: aiosqlite.Connection, user_id: int = MEMBER) -> int:
    """Images the member's ledger rows hold, whenever they were reserved."""
    return (await ledger.usage(conn, user_id, GUILD, since=0.0)).images


def written_at(root: Path, at: float) -> None:
    """Every file and folder under ``root`` as if last written at ``at``."""
    for path in [root, *root.rglob("*")]:
        os.utime(path, (at, at))


@dataclass
class Data:
    """A data folder and a queue whose clock the test sets before each submission."""

    conn: aiosqlite.Connection
    root: Path
    now: float = NOW
    sink: RecordingSink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = RecordingSink(self.conn)  # links its posts, as the bot's sink does

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def upload(self, name: str) -> Path:
        self.inputs.mkdir(parents=True, exist_ok=True)
        path = self.inputs / f"{name}.png"
        path.write_bytes(b"an uploaded picture")
        return path

    def queue(self) -> JobQueue:
        queue = JobQueue(
            self.conn,
            [DeviceWorker("cpu", lambda _: InstantEngine())],
            self.images,
            clock=lambda: self.now,
        )
        queue.set_sink(self.sink)
        return queue

    async def finished_job(self, queue: JobQueue, at: float, user_id: int = MEMBER) -> str:
        """A job with an upload, made, stored and delivered at ``at``."""
        self.now = at
        delivered = len(self.sink.delivered)
        job_id = await queue.submit(
            submission(at=at, upload=self.upload(f"{user_id}-{at}"), user_id=user_id)
        )
        await self.sink.wait_for(delivered + 1)
        return job_id

    async def waiting_job(self, at: float) -> str:
        """A job journaled by a queue that never starts: it stays queued."""
        self.now = at
        return await self.queue().submit(submission(at=at, upload=self.upload(f"waiting-{at}")))


async def test_a_storage_failure_fails_the_job_refunds_it_and_tells_the_member(
    conn: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = tmp_path / "images"
    images.write_bytes(b"")  # a file where the folder should be: no picture can be written
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images
    )
    job_id = await queue.submit(submission(at=NOW))
    await sink.wait_for(1)
    await queue.stop()
    [told] = sink.delivered
    assert not told.succeeded and told.job_id == job_id
    assert told.error == (
        "the pictures were rendered but could not be stored on the server (Not a directory); "
        f"reference {job_id}"
    )
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.FAILED
    assert record.delivered_at is not None
    assert await usage(conn) == 0  # refunded
    assert "could not be stored" in caplog.text


async def test_retention_prunes_delivered_jobs_their_files_tokens_and_settled_ledger_rows(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    last_month = await data.finished_job(queue, NOW - 40 * DAY)
    # Older than the one day kept, but this week's quota still counts its ledger rows.
    this_week = await data.finished_job(queue, NOW - 2 * DAY)
    fresh = await data.finished_job(queue, NOW - 3600)
    await queue.stop()
    waiting = await data.waiting_job(NOW - 40 * DAY)
    leftover = data.images / "0123456789abcdef"  # a crash's: its job never reached the journal
    leftover.mkdir()
    (leftover / "0.png").write_bytes(b"a picture")
    data.upload("stray")
    written_at(data.root, NOW - 2 * 3600)
    fresh_job = await journal.get_job(conn, fresh)
    assert fresh_job is not None and fresh_job.interaction_token is None  # blanked once posted
    assert await usage(conn) == 4

    pruned = await Retention(conn, data.images, data.inputs, 1, clock=lambda: NOW).prune()

    # Their posts' ids, kept, go too: the sink's small ids read as posted in 2015.
    assert pruned == Pruned(tokens=1, jobs=2, pictures=3, uploads=3, ledger_rows=2, kept_posts=2)
    for gone in (last_month, this_week):
        assert await journal.get_job(conn, gone) is None
        assert not (data.images / gone).exists()
    assert not leftover.exists()
    assert (data.images / fresh / "0.png").is_file()
    waiting_job = await journal.get_job(conn, waiting)
    assert waiting_job is not None and waiting_job.interaction_token is None  # expired
    # What a kept job reads stays: the waiting job's upload, though written long ago.
    assert sorted(path.name for path in data.inputs.iterdir()) == [
        f"{MEMBER}-{NOW - 3600}.png",
        f"waiting-{NOW - 40 * DAY}.png",
    ]
    # Last month's rows went; this week's stay, so the week's limit still counts that job.
    assert await usage(conn) == 3
    assert await Retention(conn, data.images, data.inputs, 1, clock=lambda: NOW).prune() == (
        Pruned()
    )


async def test_retention_zero_keeps_everything_but_expired_tokens(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    old = await data.finished_job(queue, NOW - 400 * DAY)
    await queue.stop()
    await data.waiting_job(NOW - 400 * DAY)
    written_at(data.root, NOW - 400 * DAY)

    pruned = await Retention(conn, data.images, data.inputs, 0, clock=lambda: NOW).prune()

    assert pruned == Pruned(tokens=1)
    assert await journal.get_job(conn, old) is not None
    assert (data.images / old / "0.png").is_file()
    assert len(list(data.inputs.iterdir())) == 2
    assert await usage(conn) == 2


async def test_retention_zero_still_sweeps_files_no_job_names_at_the_first_round(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Files no row names (a crash's; those of jobs a database put back from a backup does
    not know, which not even their maker's /forget-me reaches) go whatever the retention."""
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    old = await data.finished_job(queue, NOW - 400 * DAY)
    await queue.stop()
    unknown = data.images / "0123456789abcdef"
    unknown.mkdir()
    (unknown / "0.png").write_bytes(b"a picture")
    data.upload("stray")
    written_at(data.root, NOW - 400 * DAY)
    just_written = data.images / "fedcba9876543210"  # its job may be being journaled now
    just_written.mkdir()
    (just_written / "0.png").write_bytes(b"a picture")
    written_at(just_written, NOW - 60)
    retention = Retention(conn, data.images, data.inputs, 0, clock=lambda: NOW)

    assert await retention.prune() == Pruned(pictures=1, uploads=1)

    assert not unknown.exists()
    assert (data.images / old / "0.png").is_file()
    assert [path.name for path in data.inputs.iterdir()] == [f"{MEMBER}-{NOW - 400 * DAY}.png"]
    assert just_written.is_dir()
    assert await retention.prune() == Pruned()  # at the first round of a process only


async def test_forget_me_waits_for_unfinished_jobs_then_erases_and_anonymises(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    await data.finished_job(queue, NOW - 40 * DAY)
    await data.finished_job(queue, NOW - 2 * DAY)
    someone_else = await data.finished_job(queue, NOW - 2 * DAY, user_id=8)
    await queue.stop()
    waiting = await data.waiting_job(NOW - 3600)
    history = History(conn, data.images, data.inputs, MemberSettings(conn), clock=lambda: NOW)

    with pytest.raises(UserError, match=rf"your 1 job `{waiting}` is still queued"):
        await history.forget(MEMBER)
    assert await count_rows_of_user(conn, MEMBER) == 5  # nothing erased: 3 jobs, 2 pictures
    await journal.mark_failed(conn, waiting, "cancelled", NOW, cancelled=True)
    await ledger.refund(conn, waiting, NOW)

    forgotten = await history.forget(MEMBER)

    # Last month's rows lose the id now; this month's still count towards the member's
    # limits (forgetting oneself must not hand quota back) until the month ends.
    assert forgotten == Forgotten(
        jobs=3,
        pictures=2,
        uploads=3,
        ledger_rows_anonymised=2,
        ledger_rows_deferred=4,
        deferred_until=END_OF_THE_MONTH,
        # The member's two results (the sink's message ids), for /forget-me to delete.
        posts=(PostedMessage(9, 1001), PostedMessage(9, 1002)),
        all_posts=2,
        asked_at=NOW,
    )
    assert await count_rows_of_user(conn, MEMBER) == 0
    assert [path.name for path in data.images.iterdir()] == [someone_else]
    assert [path.name for path in data.inputs.iterdir()] == [f"8-{NOW - 2 * DAY}.png"]
    assert await usage(conn) == 1  # this week's job
    assert await usage(conn, user_id=0) == 1  # last month's, kept for the server, nameless

    at_month_end = Retention(conn, data.images, data.inputs, 0, clock=lambda: END_OF_THE_MONTH)
    assert await at_month_end.prune() == Pruned(ledger_rows_anonymised=4)
    assert await usage(conn) == 0
    assert await usage(conn, user_id=0) == 2
    assert await usage(conn, user_id=8) == 1


async def test_a_host_clock_ahead_keeps_a_token_until_its_job_is_15_minutes_journaled(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The host's clock an hour ahead of Discord's: a job journaled now holds a token issued,
    by that clock, an hour ago. The sweep keeps it until the host's own clock says its 15
    minutes passed since the job was journaled (R_FX35 D1: it blanked every live token)."""
    data = Data(conn, tmp_path / "data")
    job_id = await data.queue().submit(submission(at=NOW - 3600))  # journaled at NOW

    def sweep_at(now: float) -> Retention:
        return Retention(conn, data.images, data.inputs, 0, clock=lambda: now)

    assert await sweep_at(NOW + 14 * 60).clear_expired_tokens() == 0
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.interaction_token == "secret"
    assert await sweep_at(NOW + 15 * 60 + 1).clear_expired_tokens() == 1
