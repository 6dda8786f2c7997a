"""What /forget-me shares with others: an upload another member's job still reads stays (it
goes once no job reads it), and a post racing the erase is deleted by whoever posted it,
since nothing records it any more. Real SQLite files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import aiosqlite
import pytest

from bot.history import History
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.policy.member_settings import MemberSettings
from db import history as store
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink
from tests.support.sqlite_work import instructions_of

NOW = 1_800_000_000.0
MAKER, REROLLER, GUILD, CHANNEL = 7, 8, 5, 50


def history_of(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    return History(
        conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn), clock=lambda: NOW
    )


async def finished_job(conn: aiosqlite.Connection, job_id: str, user_id: int, upload: Path) -> None:
    request = RenderRequest("a barn", seed=1, steps=2, init_image=str(upload))
    job = journal.NewJob(job_id, "vary", user_id, GUILD, CHANNEL, request.to_json(), NOW)
    await journal.insert_job(conn, job)
    await journal.mark_done(conn, job_id, [], 0.1, NOW)


@pytest.mark.parametrize("first", [MAKER, REROLLER])
async def test_an_upload_another_members_job_reads_stays_until_no_job_reads_it(
    conn: aiosqlite.Connection, tmp_path: Path, first: int
) -> None:
    """The maker's upload, and another member's 🔄 of the maker's job, which reads it too:
    whichever member forgets first leaves it to the other's job; the second takes it."""
    upload = tmp_path / "inputs" / "a-upload.png"
    upload.parent.mkdir()
    upload.write_bytes(b"png")
    await finished_job(conn, "a" * 16, MAKER, upload)
    await finished_job(conn, "b" * 16, REROLLER, upload)
    history = history_of(conn, tmp_path)
    second = REROLLER if first == MAKER else MAKER

    forgotten = await history.forget(first)
    assert (forgotten.jobs, forgotten.uploads) == (1, 0)
    assert upload.is_file()
    assert str(upload) in await journal.input_picture_paths(conn)  # the other's job reads it

    forgotten = await history.forget(second)
    assert (forgotten.jobs, forgotten.uploads) == (1, 1)
    assert not upload.exists()


class ErasingSink(RecordingSink):
    """Discord's side of a delivery during which the member's /forget-me erased the job
    (done, not yet delivered: the erase may take it)."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history
        self.retracted: list[tuple[str, int]] = []

    async def deliver(self, job: FinishedJob) -> int | None:
        if job.request.prompt == "erased while posted":
            await self.history.forget(job.user_id)
        return await super().deliver(job)

    async def retract(self, job: FinishedJob, message_id: int) -> None:
        self.retracted.append((job.job_id, message_id))


async def test_a_result_posted_after_its_job_was_erased_is_deleted_by_the_queue(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = ErasingSink(history_of(conn, tmp_path))
    queue.set_sink(sink)
    await queue.start()
    try:
        for count, prompt in enumerate(("kept", "erased while posted"), start=1):
            request = RenderRequest(prompt, seed=1, steps=2)
            await queue.submit(Submission("imagine", request, MAKER, GUILD, CHANNEL))
            await sink.wait_for(count)
    finally:
        await queue.stop()
    _, erased = sink.delivered
    # Only the post of the job erased while it was posted, by the id the sink returned for
    # it: the one delivered before the erase stays, for /forget-me itself to delete.
    assert sink.retracted == [(erased.job_id, 1002)]


RECORDS: dict[str, Callable[[aiosqlite.Connection], Awaitable[bool]]] = {
    "result": lambda conn: journal.mark_delivered(conn, "a" * 16, NOW),
    "/show": lambda conn: journal.record_job_message(conn, "a" * 16, 999, posted_in=(GUILD, 60)),
}


@pytest.mark.parametrize("record", RECORDS)
async def test_a_post_recorded_in_the_middle_of_the_erase_is_returned_or_refused(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    """The record's statements, started while erase_user has unlinked a batch's posts but
    not yet deleted its jobs, wait for the erase: the post is never both "still there" (so
    nobody deletes it) and missing from the posts the erase returns."""
    await finished_job(conn, "a" * 16, MAKER, tmp_path / "none.png")
    recorded: list[asyncio.Task[bool]] = []
    unlink = store._unlink_posts

    async def unlink_then_record(
        conn: aiosqlite.Connection, batch: str, table: Literal["job_messages", "job_copies"]
    ) -> tuple[store.PostedMessage, ...]:
        posts = await unlink(conn, batch, table)
        recorded.append(asyncio.create_task(RECORDS[record](conn)))
        # Room for the record to run now, if nothing orders it after the erase.
        await asyncio.wait(recorded, timeout=0.5)
        return posts

    monkeypatch.setattr(store, "_unlink_posts", unlink_then_record)
    erased = await store.erase_user(
        conn, MAKER, asked_at=NOW + 1, counted_since=0, anonymise_at=NOW + 1
    )
    still_there = await recorded[0]

    assert erased.jobs == 1
    assert still_there is False
    assert erased.posts == ()


async def test_each_kind_of_input_goes_unless_another_members_job_reads_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Every picture a request reads (``job_inputs``, written with the job): the member's
    init, mask, ControlNet and image prompt pictures go; the one another member's job reads
    as its ControlNet picture, and that member's own upload, stay."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    names = ("init", "mask", "pose", "style", "shared", "theirs")
    init, mask, pose, style, shared, theirs = (inputs / f"{name}.png" for name in names)
    for path in (init, mask, pose, style, shared, theirs):
        path.write_bytes(b"png")
    mine = {
        "prompt": "a barn",
        "init_image": str(init),
        "mask_image": str(mask),
        "options": {
            "controlnet": [{"image": str(pose)}, {"image": str(shared)}],
            "ipadapter": {"images": [str(style), str(shared)]},
        },
    }
    others = {
        "prompt": "a barn",
        "init_image": str(theirs),
        "options": {"controlnet": [{"image": str(shared)}]},
    }
    for job_id, user_id, request in (("a" * 16, MAKER, mine), ("b" * 16, REROLLER, others)):
        job = journal.NewJob(job_id, "vary", user_id, GUILD, CHANNEL, json.dumps(request), NOW)
        await journal.insert_job(conn, job)
        await journal.mark_done(conn, job_id, [], 0.1, NOW)

    forgotten = await history_of(conn, tmp_path).forget(MAKER)

    assert (forgotten.jobs, forgotten.uploads) == (1, 4)
    assert sorted(path.name for path in inputs.iterdir()) == ["shared.png", "theirs.png"]
    assert await journal.input_picture_paths(conn) == {str(shared), str(theirs)}


async def others_jobs(conn: aiosqlite.Connection, tmp_path: Path, start: int, count: int) -> None:
    """``count`` done jobs of members other than the maker, reserved now, reading uploads."""
    for number in range(start, start + count):
        job_id = f"{number:016x}"
        await finished_job(conn, job_id, 100 + number, tmp_path / f"{number}.png")
        await ledger.reserve(conn, job_id, 100 + number, GUILD, 1, 1.0, NOW)


async def erase_steps(conn: aiosqlite.Connection, tmp_path: Path, user_id: int) -> int:
    """The SQLite instructions (in tens) erasing the member takes, with one job of theirs
    (reserved now) journaled first."""
    job_id = f"member-{user_id}"
    await finished_job(conn, job_id, user_id, tmp_path / "upload.png")
    await ledger.reserve(conn, job_id, user_id, GUILD, 1, 1.0, NOW)
    steps, erased = await instructions_of(
        conn,
        store.erase_user(conn, user_id, asked_at=NOW + 1, counted_since=0, anonymise_at=NOW + 1),
    )
    assert erased.jobs == 1
    return steps


async def test_the_erase_does_work_in_proportion_to_the_members_jobs_alone(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """/forget-me holds the only connection: 30 times as many jobs of other members (their
    requests, their reservations this month) must not make a member's erase slower (parsing
    every job's request took seconds at 600,000 jobs)."""
    await others_jobs(conn, tmp_path, 0, 20)
    few = await erase_steps(conn, tmp_path, MAKER)
    await others_jobs(conn, tmp_path, 20, 580)
    many = await erase_steps(conn, tmp_path, REROLLER)
    assert many <= few * 1.5
