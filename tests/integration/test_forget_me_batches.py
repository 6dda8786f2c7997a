"""/forget-me of a member with many jobs: the erase goes in short transactions, so other
members' commands on the shared connection run between them, and a stop between two leaves
whole jobs that a rerun erases. Real SQLite files."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiosqlite
import pytest

from bot.history import History
from bot.jobs import accounting
from bot.policy.member_settings import MemberSettings
from db import history as store
from db import jobs as journal
from db import presets, refusals, user_settings
from db import quotas as ledger
from db.database import transaction
from inference.types import RenderRequest

NOW = 1_800_000_000.0
LATER = NOW + 100  # a quota period that counts none of the jobs
MAKER, OTHER, GUILD, CHANNEL = 7, 8, 5, 50
JOBS = 9


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not raising where they are missing: an erase in one transaction fails on what it does.
    monkeypatch.setattr(store, "ERASE_BATCH", 2, raising=False)
    monkeypatch.setattr(store, "ANONYMISE_BATCH", 2, raising=False)


class BrokerCopies:
    """The broker's copies of jobs (``JobCopies``, the part /forget-me uses): what it was asked
    to drop."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        self.dropped.extend(job_ids)


def collect(batches: list[store.ErasedJobs]) -> Callable[[store.ErasedJobs], Awaitable[None]]:
    """An ``erased_batch`` that keeps each batch in ``batches``."""

    async def kept(batch: store.ErasedJobs) -> None:
        batches.append(batch)

    return kept


def picture_of(tmp_path: Path, job_id: str) -> Path:
    return tmp_path / "images" / job_id / "0.png"


def upload_of(tmp_path: Path, number: int) -> Path:
    """The first and the last job read the same upload."""
    return tmp_path / "inputs" / ("shared.png" if number in (0, JOBS - 1) else f"{number}.png")


async def makers_jobs(conn: aiosqlite.Connection, tmp_path: Path) -> None:
    """``JOBS`` done jobs of the maker, each with a stored picture, an upload of its own, a
    post and a reservation; one upload that the first and the last job both read."""
    for number in range(JOBS):
        job_id = f"{number:016x}"
        request = RenderRequest(
            "a barn", seed=1, steps=2, init_image=str(upload_of(tmp_path, number))
        )
        await journal.insert_job(
            conn,
            journal.NewJob(job_id, "vary", MAKER, GUILD, CHANNEL, request.to_json(), NOW + number),
        )
        image = journal.ImageRecord(job_id, 0, 1, str(picture_of(tmp_path, job_id)), "", 8, 8)
        await journal.mark_done(conn, job_id, [image], 0.1, NOW + number)
        await journal.record_job_message(conn, job_id, 1000 + number)
        await ledger.reserve(conn, job_id, MAKER, GUILD, 1, 1.0, NOW + number)


async def makers_jobs_left(conn: aiosqlite.Connection) -> int:
    rows = await conn.execute_fetchall("SELECT COUNT(*) FROM jobs WHERE user_id = ?", (MAKER,))
    return int(next(iter(rows))[0])


async def ledger_rows_naming_the_maker(conn: aiosqlite.Connection) -> list[tuple[str, str]]:
    rows = await conn.execute_fetchall(
        "SELECT job_id, kind FROM quota_ledger WHERE user_id = ? ORDER BY job_id, kind", (MAKER,)
    )
    return [(str(job_id), str(kind)) for job_id, kind in rows]


async def test_other_members_statements_run_between_the_batches_of_a_long_erase(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A member's command waiting for the connection during the erase runs before it ends,
    not after all the maker's jobs are gone (one transaction held it 1.4 s at 20,000 jobs)."""
    await makers_jobs(conn, tmp_path)
    seen: list[int] = []
    erased = False

    async def another_members_command() -> None:
        while not erased:
            async with transaction(conn):
                seen.append(await makers_jobs_left(conn))
            await asyncio.sleep(0)  # its next command, behind the erase's next batch

    command = asyncio.create_task(another_members_command())
    await asyncio.sleep(0)
    result = await store.erase_user(conn, MAKER, counted_since=LATER, anonymise_at=LATER)
    erased = True
    await command
    assert result.jobs == JOBS
    assert [left for left in seen if 0 < left < JOBS], seen


async def test_a_stop_between_batches_leaves_whole_jobs_that_a_rerun_erases(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The process stops after the first batch of jobs: the jobs left keep their pictures,
    uploads and posts (none is shown half-erased), the erased ones have none left; a rerun
    erases the rest, and the upload the first and last jobs shared goes with the last."""
    await makers_jobs(conn, tmp_path)
    batches: list[store.ErasedJobs] = []

    async def stop_after_the_first(batch: store.ErasedJobs) -> None:
        batches.append(batch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await store.erase_user(
            conn,
            MAKER,
            counted_since=LATER,
            anonymise_at=LATER,
            erased_batch=stop_after_the_first,
        )
    (first,) = batches
    assert first.job_ids == (f"{0:016x}", f"{1:016x}")
    assert first.image_paths == [str(picture_of(tmp_path, f"{n:016x}")) for n in (0, 1)]
    assert first.input_paths == [str(upload_of(tmp_path, 1))]  # not the shared one
    assert [post.message_id for post in first.posts] == [1000, 1001]
    assert await makers_jobs_left(conn) == JOBS - 2
    for number in range(2, JOBS):
        job_id = f"{number:016x}"
        pictures = await journal.images_of(conn, job_id)
        assert [picture.path for picture in pictures] == [str(picture_of(tmp_path, job_id))]
        assert await store.is_job_post(conn, job_id, (GUILD, CHANNEL), 1000 + number)
    assert str(upload_of(tmp_path, 0)) in await journal.input_picture_paths(conn)
    # The ledger goes after the jobs: a rerun anonymises it.
    assert await ledger.usage(conn, MAKER, GUILD, 0) == ledger.Usage(JOBS, JOBS * 1.0)

    rerun_batches: list[store.ErasedJobs] = []
    rerun = await store.erase_user(
        conn, MAKER, counted_since=LATER, anonymise_at=LATER, erased_batch=collect(rerun_batches)
    )
    assert rerun.jobs == JOBS - 2
    assert str(upload_of(tmp_path, 0)) in [p for batch in rerun_batches for p in batch.input_paths]
    assert await store.count_rows_of_user(conn, MAKER) == 0
    assert await ledger_rows_naming_the_maker(conn) == []


async def test_what_the_member_makes_during_the_erase_goes_whole_or_stays_whole(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A job the member starts and ends while their jobs are erased was not one the erase's
    check saw: it stays, with its picture and its ledger rows (once erased with the jobs, its
    ledger rows kept the member's id for good). A refusal, a setting and a preset written
    meanwhile are gone when the erase answers."""
    await makers_jobs(conn, tmp_path)
    during = "d" * 16
    before = NOW + 50  # in no quota period the erase counts: anonymised at once

    erased_ids: list[str] = []

    async def the_member_goes_on(batch: store.ErasedJobs) -> None:
        erased_ids.extend(batch.job_ids)
        if batch.job_ids[0] != f"{0:016x}":
            return
        request = RenderRequest("a barn", seed=1, steps=2).to_json()
        await journal.insert_job(
            conn, journal.NewJob(during, "imagine", MAKER, GUILD, CHANNEL, request, before)
        )
        await ledger.reserve(conn, during, MAKER, GUILD, 1, 1.0, before)
        async with transaction(conn):  # as the queue ends a job: with its charge
            image = journal.ImageRecord(during, 0, 1, str(picture_of(tmp_path, during)), "", 8, 8)
            await journal.mark_done(conn, during, [image], 0.1, before + 1)
            await ledger.commit(conn, during, 0.1, before + 1)
        refusal = refusals.NewRefusal(GUILD, CHANNEL, MAKER, "quota", "over your limit", before)
        await refusals.record(conn, refusal)
        await user_settings.put(conn, MAKER, user_settings.UserSettings(steps=9), before)
        preset = presets.StoredPreset("fast", {"steps": 8})
        await presets.put(conn, presets.Scope.MEMBER, MAKER, preset, before)

    await store.erase_user(
        conn, MAKER, counted_since=LATER, anonymise_at=LATER, erased_batch=the_member_goes_on
    )
    assert erased_ids == [f"{number:016x}" for number in range(JOBS)]
    assert await store.count_rows_of_user(conn, MAKER) == 2  # the job and its picture's row
    assert await ledger_rows_naming_the_maker(conn) == [(during, "commit"), (during, "reserve")]

    again: list[store.ErasedJobs] = []
    await store.erase_user(
        conn, MAKER, counted_since=LATER, anonymise_at=LATER, erased_batch=collect(again)
    )
    assert [job_id for batch in again for job_id in batch.job_ids] == [during]
    assert await store.count_rows_of_user(conn, MAKER) == 0
    assert await ledger_rows_naming_the_maker(conn) == []


async def test_each_batchs_files_are_deleted_before_the_next_batch(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/forget-me stops in its second batch: the first batch's pictures and upload are gone
    from the disk already (their rows are; nothing would name those files again), the rest
    stay with their jobs for a rerun."""
    await makers_jobs(conn, tmp_path)
    for number in range(JOBS):
        for path in (picture_of(tmp_path, f"{number:016x}"), upload_of(tmp_path, number)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
    erase = accounting.erase_member

    async def stop_in_the_second_batch(
        conn: aiosqlite.Connection,
        user_id: int,
        *,
        erased_batch: Callable[[store.ErasedJobs], Awaitable[None]],
        **window: float,
    ) -> store.ErasedData:
        async def batch_then_stop(batch: store.ErasedJobs) -> None:
            if batch.job_ids[0] != f"{0:016x}":
                raise KeyboardInterrupt
            await erased_batch(batch)

        return await erase(conn, user_id, erased_batch=batch_then_stop, **window)

    monkeypatch.setattr(accounting, "erase_member", stop_in_the_second_batch)
    copies = BrokerCopies()
    history = History(
        conn,
        tmp_path / "images",
        tmp_path / "inputs",
        MemberSettings(conn),
        clock=lambda: LATER,
        copies=copies,
    )
    with pytest.raises(KeyboardInterrupt):
        await history.forget(MAKER)
    # The broker was asked to drop the first batch's copies: a rerun names only the rest.
    assert copies.dropped == [f"{0:016x}", f"{1:016x}"]
    assert not picture_of(tmp_path, f"{0:016x}").exists()
    assert not picture_of(tmp_path, f"{1:016x}").exists()
    assert not upload_of(tmp_path, 1).exists()
    for number in [0, *range(2, JOBS)]:  # the upload the last job reads, and the rest
        assert upload_of(tmp_path, number).exists()
    for number in range(4, JOBS):
        assert picture_of(tmp_path, f"{number:016x}").exists()
