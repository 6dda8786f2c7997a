"""/forget-me of a member with many jobs: the erase goes in short transactions, so other
members' commands on the shared connection run between them, and a stop between two leaves
whole jobs that a rerun erases. Real SQLite files."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiosqlite
import discord
import pytest

from bot.history import Erasure, Forgotten, History, ReplyToken, TellErased
from bot.jobs import accounting
from bot.policy.member_settings import MemberSettings
from cogs import history as cogs_history
from cogs.history import HistoryCog
from cogs.results.progress import INTERACTION_TOKEN_LIFETIME_S
from db import history as store
from db import jobs as journal
from db import presets, refusals, user_settings
from db import quotas as ledger
from db.database import transaction
from inference.types import RenderRequest
from tests.conftest import ErrorLogs
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot

NOW = 1_800_000_000.0
LATER = NOW + 100  # a quota period that counts none of the jobs
MAKER, OTHER, GUILD, CHANNEL = 7, 8, 5, 50
JOBS = 9
ASKED = NOW + JOBS  # when the maker asked: after their jobs


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
    result = await store.erase_user(
        conn, MAKER, asked_at=LATER, counted_since=LATER, anonymise_at=LATER
    )
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
            asked_at=LATER,
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
        conn,
        MAKER,
        asked_at=LATER,
        counted_since=LATER,
        anonymise_at=LATER,
        erased_batch=collect(rerun_batches),
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
        conn,
        MAKER,
        asked_at=ASKED,
        counted_since=LATER,
        anonymise_at=LATER,
        erased_batch=the_member_goes_on,
    )
    assert erased_ids == [f"{number:016x}" for number in range(JOBS)]
    assert await store.count_rows_of_user(conn, MAKER) == 2  # the job and its picture's row
    assert await ledger_rows_naming_the_maker(conn) == [(during, "commit"), (during, "reserve")]

    again: list[store.ErasedJobs] = []
    await store.erase_user(
        conn,
        MAKER,
        asked_at=LATER,
        counted_since=LATER,
        anonymise_at=LATER,
        erased_batch=collect(again),
    )
    assert [job_id for batch in again for job_id in batch.job_ids] == [during]
    assert await store.count_rows_of_user(conn, MAKER) == 0
    assert await ledger_rows_naming_the_maker(conn) == []


def stop_once_in_the_second_batch(
    monkeypatch: pytest.MonkeyPatch, stop: type[BaseException] = KeyboardInterrupt
) -> asyncio.Event:
    """The next /forget-me stops (``stop``: the process ends) at its second batch, once the
    batch's rows are gone, before its files are; later ones run to the end. Set once it
    stopped."""
    erase = accounting.erase_member
    stopped = asyncio.Event()

    async def stop_in_the_second_batch(
        conn: aiosqlite.Connection,
        user_id: int,
        *,
        erased_batch: Callable[[store.ErasedJobs], Awaitable[None]],
        **window: float,
    ) -> store.ErasedData:
        first = True

        async def batch_then_stop(batch: store.ErasedJobs) -> None:
            nonlocal first
            if not first and not stopped.is_set():
                stopped.set()
                raise stop
            first = False
            await erased_batch(batch)

        return await erase(conn, user_id, erased_batch=batch_then_stop, **window)

    monkeypatch.setattr(accounting, "erase_member", stop_in_the_second_batch)
    return stopped


async def makers_jobs_with_files(conn: aiosqlite.Connection, tmp_path: Path) -> None:
    await makers_jobs(conn, tmp_path)
    for number in range(JOBS):
        for path in (picture_of(tmp_path, f"{number:016x}"), upload_of(tmp_path, number)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")


def history_of(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    copies: BrokerCopies,
    clock: Callable[[], float] = lambda: LATER,
) -> History:
    """By default the maker asks at ``LATER``: after all their jobs."""
    return History(
        conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn), clock, copies
    )


async def test_each_batchs_files_are_deleted_before_the_next_batch(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/forget-me stops in its second batch: the first batch's pictures and upload are gone
    from the disk already (their rows are; nothing would name those files again), the rest
    stay with their jobs for a rerun."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    copies = BrokerCopies()
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, copies).forget(MAKER)
    # The broker was asked to drop the first batch's copies: a rerun names only the rest.
    assert copies.dropped == [f"{0:016x}", f"{1:016x}"]
    assert not picture_of(tmp_path, f"{0:016x}").exists()
    assert not picture_of(tmp_path, f"{1:016x}").exists()
    assert not upload_of(tmp_path, 1).exists()
    for number in [0, *range(2, JOBS)]:  # the upload the last job reads, and the rest
        assert upload_of(tmp_path, number).exists()
    for number in range(4, JOBS):
        assert picture_of(tmp_path, f"{number:016x}").exists()


async def test_a_rerun_answers_for_the_whole_request(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/forget-me stops in its second batch (its rows gone, not yet its files); the member
    runs it again: the answer counts what both runs erased (the first two batches' jobs, and
    the files the stop left, which the rerun deletes), not the rerun's part alone."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    history = history_of(conn, tmp_path, BrokerCopies())
    with pytest.raises(KeyboardInterrupt):
        await history.forget(MAKER, ReplyToken(1, "first"))
    forgotten = await history.forget(MAKER, ReplyToken(1, "again"))
    assert (forgotten.jobs, forgotten.pictures, forgotten.uploads) == (JOBS, JOBS, JOBS - 1)
    assert forgotten.all_posts == JOBS and len(forgotten.posts) == JOBS - 4
    for number in range(JOBS):
        assert not picture_of(tmp_path, f"{number:016x}").exists()
        assert not upload_of(tmp_path, number).exists()
    assert await store.count_rows_of_user(conn, MAKER) == 0
    # Told (the cog's answer): the request is done, and no start resumes it.
    await history.erasure_told(MAKER, forgotten.asked_at)
    assert await history.unfinished_erasures() == []


async def test_a_start_finishes_a_request_a_stop_left(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/forget-me stops in its second batch; the member makes a job after asking; the next
    start finds the request journaled, erases the rest of what the member made up to when they
    asked (not the job made since), with the files the stop left, and answers for the whole
    request."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, BrokerCopies()).forget(MAKER, ReplyToken(1, "token"))
    since = "a" * 16
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    await journal.insert_job(
        conn, journal.NewJob(since, "imagine", MAKER, GUILD, CHANNEL, request, LATER + 1)
    )
    image = journal.ImageRecord(since, 0, 1, str(picture_of(tmp_path, since)), "", 8, 8)
    await journal.mark_done(conn, since, [image], 0.1, LATER + 2)

    started = history_of(conn, tmp_path, BrokerCopies())  # the next start's
    (erasure,) = await started.unfinished_erasures()
    assert erasure == Erasure(MAKER, LATER, ReplyToken(1, "token"))
    forgotten = await started.resume(erasure)
    assert forgotten is not None
    assert (forgotten.jobs, forgotten.pictures, forgotten.uploads) == (JOBS, JOBS, JOBS - 1)
    assert forgotten.all_posts == JOBS
    assert await store.count_rows_of_user(conn, MAKER) == 2  # the later job and its picture
    assert [job.job_id for job in (await started.page(MAKER, 0, None, guild_id=GUILD)).lines] == [
        since
    ]
    for number in range(JOBS):
        assert not picture_of(tmp_path, f"{number:016x}").exists()
        assert not upload_of(tmp_path, number).exists()
    await started.erasure_told(MAKER, erasure.asked_at)
    assert await started.unfinished_erasures() == []
    assert await started.resume(erasure) is None  # told: nothing to finish


async def test_a_wall_clock_stepped_back_still_erases_the_jobs_made_before_asking(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The queue journaled the member's jobs at ``NOW`` and after (its clock never goes back);
    the wall clock then stepped back a minute: the request is asked at the newest job's time,
    not the clock's, so none of them is left while the member is told it is done."""
    await makers_jobs_with_files(conn, tmp_path)
    history = history_of(conn, tmp_path, BrokerCopies(), lambda: NOW - 60)
    forgotten = await history.forget(MAKER)
    assert forgotten.asked_at == NOW + JOBS - 1
    assert (forgotten.jobs, forgotten.pictures) == (JOBS, JOBS)
    assert await store.count_rows_of_user(conn, MAKER) == 0


class StopInTheSecondDrop(BrokerCopies):
    """The process ends while the broker is asked to drop the second batch's copies: that
    batch's files are deleted already."""

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        if self.dropped:
            raise KeyboardInterrupt
        self.dropped.extend(job_ids)


async def test_a_stop_after_a_batchs_files_went_still_counts_them(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The pictures and uploads of a batch are counted with its rows: a stop after their files
    went (the next start finds them gone) leaves none out of the answer, and the next start
    asks the broker to drop that batch's copies."""
    await makers_jobs_with_files(conn, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, StopInTheSecondDrop()).forget(MAKER)
    assert not picture_of(tmp_path, f"{2:016x}").exists()  # the second batch's, before the stop
    copies = BrokerCopies()
    started = history_of(conn, tmp_path, copies)
    (erasure,) = await started.unfinished_erasures()
    forgotten = await started.resume(erasure)
    assert forgotten is not None
    assert (forgotten.jobs, forgotten.pictures, forgotten.uploads) == (JOBS, JOBS, JOBS - 1)
    assert copies.dropped[:2] == [f"{2:016x}", f"{3:016x}"]


async def test_the_broker_copies_of_the_batch_a_stop_interrupted_are_dropped_at_the_next_start(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop comes once the second batch's rows are gone, before its files and its broker
    copies: the journal keeps its job ids, and the next start drops those copies too, so every
    job's copy was asked to go (none is left unsaid)."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    first = BrokerCopies()
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, first).forget(MAKER)
    second = BrokerCopies()
    started = history_of(conn, tmp_path, second)
    (erasure,) = await started.unfinished_erasures()
    forgotten = await started.resume(erasure)
    assert forgotten is not None and not forgotten.broker_copies_left
    assert sorted(first.dropped + second.dropped) == [f"{n:016x}" for n in range(JOBS)]


async def test_an_upload_a_job_reads_since_the_stop_is_left_to_it(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another member's 🔄 of a post not deleted yet, journaled after the second batch's rows
    went and before the stop's files' delete, reads that batch's upload: the next start's
    finish leaves it to that job (retention removes it once no job reads it)."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, BrokerCopies()).forget(MAKER)
    upload = upload_of(tmp_path, 2)
    request = RenderRequest("a barn", seed=1, steps=2, init_image=str(upload)).to_json()
    await journal.insert_job(
        conn, journal.NewJob("b" * 16, "vary", OTHER, GUILD, CHANNEL, request, LATER + 1)
    )
    started = history_of(conn, tmp_path, BrokerCopies())
    (erasure,) = await started.unfinished_erasures()
    finished = await started.resume(erasure)
    assert finished is not None
    assert upload.exists()
    # The maker's 8 uploads (the first and the last job share one) but the one left to the
    # other member's job: the member is not told it went.
    assert finished.uploads == JOBS - 2
    assert not upload_of(tmp_path, 3).exists()  # the batch's other upload goes
    assert not picture_of(tmp_path, f"{2:016x}").exists()


async def test_a_rerun_racing_the_starts_finish_answers_for_the_whole_request(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member runs /forget-me again as the next start finishes their request: the two
    erases run one after the other, and the rerun (asked last) answers for the whole request;
    the start's finish finds it asked again and leaves the answer to it."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, BrokerCopies()).forget(MAKER)
    started = history_of(conn, tmp_path, BrokerCopies())
    (erasure,) = await started.unfinished_erasures()
    resumed, rerun = await asyncio.gather(started.resume(erasure), started.forget(MAKER))
    assert resumed is not None  # it began first: it erased the rest
    assert (rerun.jobs, rerun.pictures, rerun.uploads) == (JOBS, JOBS, JOBS - 1)
    assert rerun.all_posts == JOBS
    assert await store.count_rows_of_user(conn, MAKER) == 0


async def test_a_request_asked_again_is_answered_by_the_newer_run(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start read the request a stop left, then the member asked again before the start
    finished it: the start's finish does nothing (None), the newer run answers, and only its
    ``erasure_told`` ends the request (the older time's does not)."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        await history_of(conn, tmp_path, BrokerCopies()).forget(MAKER, ReplyToken(1, "first"))
    (erasure,) = await history_of(conn, tmp_path, BrokerCopies()).unfinished_erasures()
    again = history_of(conn, tmp_path, BrokerCopies(), lambda: LATER + 5)
    forgotten = await again.forget(MAKER, ReplyToken(1, "again"))
    assert forgotten.asked_at == LATER + 5 and forgotten.jobs == JOBS
    assert await again.resume(erasure) is None
    await again.erasure_told(MAKER, erasure.asked_at)  # the older request's: nothing
    assert await again.unfinished_erasures() == [Erasure(MAKER, LATER + 5, ReplyToken(1, "again"))]
    await again.erasure_told(MAKER, forgotten.asked_at)
    assert await again.unfinished_erasures() == []


async def test_a_requests_reply_token_is_blanked_once_it_expired(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request a stop left keeps its interaction's token only while Discord takes it: past
    that it is blanked (the member is told by direct message)."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch)
    now = LATER
    history = history_of(conn, tmp_path, BrokerCopies(), lambda: now)
    with pytest.raises(KeyboardInterrupt):
        await history.forget(MAKER, ReplyToken(1, "token"))
    now = LATER + INTERACTION_TOKEN_LIFETIME_S
    assert await history.forget_reply_tokens(INTERACTION_TOKEN_LIFETIME_S) == 0  # not past
    assert [e.reply for e in await history.unfinished_erasures()] == [ReplyToken(1, "token")]
    now += 1
    assert await history.forget_reply_tokens(INTERACTION_TOKEN_LIFETIME_S) == 1
    assert await history.unfinished_erasures() == [Erasure(MAKER, LATER, None)]
    rows = await conn.execute_fetchall("SELECT interaction_token FROM erasures")
    assert [row[0] for row in rows] == [None]


async def sweep_until_told(
    history: History, fake_discord: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot's sweep (its period an hour, the retry's backoff cut to tens of milliseconds)
    run until the member's request is told and ended."""
    told = asyncio.Event()
    erasure_told = history.erasure_told

    async def telling(user_id: int, asked_at: float) -> None:
        await erasure_told(user_id, asked_at)
        told.set()

    monkeypatch.setattr(history, "erasure_told", telling)
    monkeypatch.setattr(cogs_history, "ERASURE_RETRY_WAITS_S", (0.01, 0.02))
    fake_discord.add_member(MAKER, "maker")
    client = discord.Client(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)
    async with running_bot(fake_discord, client):
        cog = HistoryCog(history, pending_sweep_s=3600.0)
        cog.resume_forget_me(client)
        await asyncio.wait_for(told.wait(), 10)
        await cog.cog_unload()


async def test_a_failed_request_is_tried_again_within_seconds_by_the_sweep(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_discord: FakeDiscord,
    error_logs: ErrorLogs,
) -> None:
    """/forget-me fails in its second batch (a disk error, not a stop), and so does the
    sweep's first try (its read of the requests): the next tries come after the retry's
    backoff, not the sweep's period (15 minutes, an hour here) nor the interaction token's
    life; the member is told once, by direct message (no token), for the whole request."""
    await makers_jobs_with_files(conn, tmp_path)
    history = history_of(conn, tmp_path, BrokerCopies())
    stop_once_in_the_second_batch(monkeypatch, OSError)
    with pytest.raises(OSError):
        await history.forget(MAKER)
    reads = 0
    read = history.unfinished_erasures

    async def read_but_the_first() -> list[Erasure]:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise OSError("disk I/O error")
        return await read()

    monkeypatch.setattr(history, "unfinished_erasures", read_but_the_first)
    error_logs.expect("finishing interrupted requests failed")
    await sweep_until_told(history, fake_discord, monkeypatch)
    assert reads == 2
    direct = fake_discord.dm_channel_of(MAKER)
    (message,) = [m for m in fake_discord.messages.values() if m.channel_id == direct]
    assert "was interrupted" in message.content
    assert f"erased {JOBS} jobs, {JOBS} stored pictures" in message.content
    assert await read() == []
    assert await store.count_rows_of_user(conn, MAKER) == 0
    # The jobs' posts name a channel the fake does not hold (rows only): their deletes 404.
    assert {v.split(":")[0] for v in fake_discord.take_violations()} == {"unknown-resource"}


async def test_a_retry_failing_again_and_again_logs_its_traceback_once(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_discord: FakeDiscord,
    error_logs: ErrorLogs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request whose retry fails at each pass (a disk error that lasts) is logged with its
    traceback once per run of failures, then one warning line a pass (review R_L5, 6)."""
    await makers_jobs_with_files(conn, tmp_path)
    history = history_of(conn, tmp_path, BrokerCopies())
    stop_once_in_the_second_batch(monkeypatch, OSError)
    with pytest.raises(OSError):
        await history.forget(MAKER)
    tries, resume = 0, history.resume

    async def resume_after_three_failures(
        erasure: Erasure, tell: TellErased | None = None
    ) -> object:
        nonlocal tries
        tries += 1
        if tries <= 3:
            raise OSError("disk I/O error")
        return await resume(erasure, tell)

    monkeypatch.setattr(history, "resume", resume_after_three_failures)
    error_logs.expect("finishing an interrupted request failed")
    await sweep_until_told(history, fake_discord, monkeypatch)
    failed = [r for r in caplog.records if "finishing an interrupted request failed" in r.message]
    assert [(r.levelname, r.exc_info is not None) for r in failed] == [
        ("ERROR", True),
        ("WARNING", False),
        ("WARNING", False),
    ]
    assert failed[1].message.endswith("failed again (OSError)")
    assert await history.unfinished_erasures() == []
    # The jobs' posts name a channel the fake does not hold (rows only): their deletes 404.
    assert {v.split(":")[0] for v in fake_discord.take_violations()} == {"unknown-resource"}


def test_the_retry_waits_double_from_seconds_to_two_minutes() -> None:
    waits = [cogs_history.erasure_retry_wait_s(failures) for failures in range(1, 9)]
    assert waits == [5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 120.0, 120.0]


async def test_a_rerun_racing_a_retry_leaves_each_request_told_once(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed request's retry and the member's rerun meet: the one that began first erases
    the rest, tells the member and ends the request before the other runs, so the request is
    told once (with its whole count), and the rerun, a request of its own, answers for itself."""
    await makers_jobs_with_files(conn, tmp_path)
    stop_once_in_the_second_batch(monkeypatch, OSError)
    history = history_of(conn, tmp_path, BrokerCopies())
    with pytest.raises(OSError):
        await history.forget(MAKER)
    (erasure,) = await history.unfinished_erasures()
    told: list[tuple[str, int, float]] = []

    def telling(run: str) -> Callable[[Forgotten], Awaitable[None]]:
        async def tell(forgotten: Forgotten) -> None:
            await asyncio.sleep(0)  # as a message to Discord: the other run may go meanwhile
            told.append((run, forgotten.jobs, forgotten.asked_at))

        return tell

    await asyncio.gather(
        history.resume(erasure, telling("retry")), history.forget(MAKER, tell=telling("rerun"))
    )
    assert told == [("retry", JOBS, erasure.asked_at), ("rerun", 0, LATER)]
    assert await history.unfinished_erasures() == []
    assert await store.count_rows_of_user(conn, MAKER) == 0
