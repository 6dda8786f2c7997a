"""A withdrawal follows the pixels forward: a moderator's deletion of a job's post withdraws
the server's jobs made after it with the same pictures (not older ones, not another server's,
and not for a job Easel withheld), a job that renders them again is withheld at delivery and
refunded, and the pixels of a withdrawn job outlive its erase (its maker's /forget-me,
retention) naming no one; a deleted channel or thread withdraws the jobs posted or queued
there and in its threads, no twin. Real SQLite, the real queue and history."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
import discord
import pytest

from bot.history import History
from bot.jobs import accounting
from bot.jobs.queue import Submission
from bot.jobs.queue import delivery as job_delivery
from bot.policy.delivery import CHANNEL_DELETED, SAME_PICTURE_REMOVED, SOURCE_CHANNEL_DELETED
from bot.policy.member_settings import MemberSettings
from cogs.results.posting import DiscordResults
from db import history as store
from db import jobs as journal
from db.database import load_migrations, migrate
from db.history import count_rows_of_user
from inference.types import RenderRequest
from tests.integration.test_delivery_gate import (
    REFUNDED,
    FakeDiscord,
    Sent,
    all_delivered,
    delivered_again,
    results_for,
    spent_today,
    started,
    submission,
)
from tests.integration.test_withdrawn_results import (
    CHANNEL,
    GUILD,
    MEMBER,
    NOW,
    OTHER_CHANNEL,
    OTHER_GUILD,
    stored,
)
from tests.support.engines import InstantEngine

OTHER_MEMBER = 9
THREAD = 70  # a thread of CHANNEL
LIGHTHOUSE, BOAT = b"L" * 32, b"B" * 32  # pixel digests


async def made(
    conn: aiosqlite.Connection,
    job_id: str,
    digest: bytes,
    *,
    user: int = MEMBER,
    guild: int = GUILD,
    channel: int = CHANNEL,
    posted_as: int | None = None,
    made_at: float = NOW,
    insert: Callable[[aiosqlite.Connection, journal.NewJob], Awaitable[None]] = journal.insert_job,
) -> None:
    """A finished, delivered job of one picture with these pixels (posted as ``posted_as``)."""
    request = RenderRequest("a lighthouse", seed=1, steps=2)
    await insert(
        conn, journal.NewJob(job_id, "imagine", user, guild, channel, request.to_json(), made_at)
    )
    picture = journal.ImageRecord(job_id, 0, 1, f"/images/{job_id}.png", "", 64, 64, digest)
    await journal.mark_done(conn, job_id, [picture], 0.1, NOW)
    if posted_as is not None:
        await journal.record_job_message(conn, job_id, posted_as, posted_in=(guild, channel))
    await journal.mark_delivered(conn, job_id, NOW)


def history_of(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    return History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: NOW + 1)


async def test_a_moderators_withdrawal_takes_the_same_pixels_made_after_it_with_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Never an older job: a member who may delete posts in one channel only could paste
    another's settings there and delete the copy, withdrawing the original server-wide."""
    await made(conn, "o" * 16, LIGHTHOUSE, user=OTHER_MEMBER)  # the original, made before
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100, made_at=NOW + 1)
    await made(conn, "b" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, made_at=NOW + 2)  # pasted
    await made(conn, "c" * 16, LIGHTHOUSE, guild=OTHER_GUILD, made_at=NOW + 2)  # not withdrawn
    await made(conn, "d" * 16, BOAT)
    history = history_of(conn, tmp_path)
    withdrawn = await history.withdraw_deleted(GUILD, CHANNEL, [100])
    assert sorted(withdrawn) == ["a" * 16, "b" * 16]
    assert not (await stored(history, "o" * 16)).withdrawn
    # The delivery gate reads the same rule: the original is no copy of the withdrawn job.
    assert not await history.pixels_withdrawn("o" * 16, GUILD)
    assert await history.pixels_withdrawn("b" * 16, GUILD)
    # Easel's withholding is about its channel or texts: the same pixels stay usable.
    await made(conn, "e" * 16, BOAT, user=OTHER_MEMBER)
    assert await history.withhold_job("d" * 16, SAME_PICTURE_REMOVED) == ["d" * 16]


async def test_a_picture_made_again_after_its_withdrawal_is_withheld_also_after_an_erase(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The same settings render the same pixels: withheld and refunded at delivery, while
    the job is there and after its maker's /forget-me erased it; other pixels are posted."""
    fake = FakeDiscord()
    results = results_for(conn, fake)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    other_seed = Submission(
        "imagine", RenderRequest("a dog", seed=2, steps=2), MEMBER, GUILD, channel_id=CHANNEL
    )
    try:
        first = await queue.submit(submission())
        await all_delivered(conn, [first])
        assert [len(files) for _, files in fake.channel.messages] == [1]
        assert results.history is not None
        assert await results.history.withdraw_deleted(GUILD, CHANNEL, [1001]) == [first]
        again, kept = await queue.submit(submission()), await queue.submit(other_seed)
        await all_delivered(conn, [again, kept])
        assert (await spent_today(conn)).images == 2  # the first and the other seed's
        await results.history.forget(MEMBER)
        after_erase = await queue.submit(submission())
        await all_delivered(conn, [after_erase])
    finally:
        await queue.stop()
    assert [len(files) for _, files in fake.channel.messages] == [1, 1]  # first, kept
    assert [content for content, _ in fake.direct.messages] == [
        f"Your job `{job_id}` in Guild was not posted: {SAME_PICTURE_REMOVED}. {REFUNDED}"
        for job_id in (again, after_erase)
    ]


async def test_an_erase_keeps_the_withdrawn_pixels_naming_no_one(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """/forget-me and retention delete the jobs; the server still knows the pixels its
    moderator withdrew (a saved copy stays refused), and nothing else."""
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    await made(conn, "b" * 16, BOAT, posted_as=200)  # still shown: not kept
    await made(conn, "c" * 16, BOAT, user=OTHER_MEMBER, posted_as=300)
    history = history_of(conn, tmp_path)
    await history.withdraw_deleted(GUILD, CHANNEL, [100])
    await history.forget(MEMBER)
    assert await count_rows_of_user(conn, MEMBER) == 0
    [copy] = await history.jobs_with_picture(GUILD, LIGHTHOUSE)
    assert copy.withdrawn and copy.user_id != MEMBER and not copy.texts
    assert await history.jobs_with_picture(OTHER_GUILD, LIGHTHOUSE) == []
    assert [job.job_id for job in await history.jobs_with_picture(GUILD, BOAT)] == ["c" * 16]
    await history.withdraw_deleted(GUILD, CHANNEL, [300])
    pruned = await store.prune_jobs(conn, finished_before=NOW + 1, at_most=10)  # retention
    assert pruned.job_ids == ("c" * 16,)
    assert [job.withdrawn for job in await history.jobs_with_picture(GUILD, BOAT)] == [True]
    rows = await conn.execute_fetchall("SELECT * FROM withdrawn_pictures ORDER BY pixel_digest")
    assert [tuple(row) for row in rows] == [(GUILD, BOAT, NOW + 1), (GUILD, LIGHTHOUSE, NOW + 1)]


async def test_a_restore_brings_back_the_same_pixels_withdrawn_with_it_erased_or_not(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The withdrawal went sideways to the server's copies of the pixels: the restore does
    too, and clears the tombstone an erased copy left then, or the restored picture would
    still be refused (``jobs_with_picture`` lists withdrawn jobs first). A copy withdrawn at
    another moment, and its tombstone, stay."""
    clock = [NOW]
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: clock[0])
    await made(conn, "e" * 16, BOAT, user=OTHER_MEMBER, posted_as=500)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [500]) == ["e" * 16]
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    # Copies made after it: withdrawn with it (an older one would not be).
    await made(conn, "b" * 16, LIGHTHOUSE, user=OTHER_MEMBER, made_at=NOW + 1)  # then erased
    await made(conn, "c" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, made_at=NOW + 1)
    clock[0] = NOW + 60
    withdrawn = await history.withdraw_deleted(GUILD, CHANNEL, [100])
    assert sorted(withdrawn) == ["a" * 16, "b" * 16, "c" * 16]
    await history.forget(OTHER_MEMBER)
    await made(conn, "d" * 16, BOAT, posted_as=400, made_at=NOW + 100)
    clock[0] = NOW + 120
    assert await history.withdraw_deleted(GUILD, CHANNEL, [400]) == ["d" * 16]
    assert (await history.restore(GUILD, "a" * 16, admin_id=1)).with_it == ["c" * 16]
    matches = await history.jobs_with_picture(GUILD, LIGHTHOUSE)
    assert [job.withdrawn for job in matches] == [False, False]
    assert not await history.pixels_withdrawn("a" * 16, GUILD)
    assert (await history.restore(GUILD, "d" * 16, admin_id=1)).with_it == []
    assert await history.pixels_withdrawn("d" * 16, GUILD)  # erased "e", withdrawn before


async def test_an_upload_digested_twice_lists_each_job_once_those_refusing_first(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """An upload its EXIF turns is looked up as stored and as shown
    (``DecodedUpload.pixel_digests``): a withdrawn job matching the second digest refuses it,
    ahead of a job still shown matching the first."""
    history = history_of(conn, tmp_path)
    await made(conn, "b" * 16, BOAT)
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == ["a" * 16]
    matches = await history.jobs_with_picture(GUILD, BOAT, LIGHTHOUSE)
    assert [(job.job_id, job.withdrawn) for job in matches] == [
        ("a" * 16, True),
        ("b" * 16, False),
    ]
    assert [job.job_id for job in await history.jobs_with_picture(GUILD, BOAT, BOAT)] == ["b" * 16]


async def test_an_upload_is_refused_only_by_a_moderators_withdrawal_no_older_job_outlives(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """An upload of a withdrawn job's pixels is refused (``StoredJob.withdrawn`` as the upload
    check reads it), but not for a copy deleted where an older job with them stands (the
    forward rule), nor for a job withdrawn with its deleted channel or withheld by Easel."""
    history = history_of(conn, tmp_path)
    await made(conn, "o" * 16, LIGHTHOUSE, user=OTHER_MEMBER)  # the victim's original
    await made(conn, "a" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, posted_as=100, made_at=NOW + 1)
    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [100]) == ["a" * 16]
    matches = await history.jobs_with_picture(GUILD, LIGHTHOUSE)
    assert [(job.job_id, job.withdrawn) for job in matches] == [
        ("o" * 16, False),
        ("a" * 16, False),
    ]
    await made(conn, "t" * 16, BOAT, posted_as=200)  # in a temporary channel, deleted
    await made(conn, "w" * 16, BOAT, channel=OTHER_CHANNEL, made_at=NOW + 1)
    assert await history.withdraw_deleted_channel(GUILD, CHANNEL) == ["t" * 16]
    assert await history.withhold_job("w" * 16, SAME_PICTURE_REMOVED) == ["w" * 16]
    assert [job.withdrawn for job in await history.jobs_with_picture(GUILD, BOAT)] == [False] * 2
    # The original's own deletion refuses it, and its copies (withdrawn with it).
    await history.posted_again(await stored(history, "o" * 16), OTHER_CHANNEL, 300)
    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [300]) == ["o" * 16]
    assert [job.withdrawn for job in await history.jobs_with_picture(GUILD, LIGHTHOUSE)] == [
        True,
        True,
    ]


async def test_a_deleted_channel_withdraws_the_jobs_posted_there_and_unlinks_their_posts(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    await made(conn, "b" * 16, BOAT, channel=OTHER_CHANNEL, posted_as=200)
    await made(conn, "c" * 16, b"C" * 32, guild=OTHER_GUILD, channel=OTHER_CHANNEL, posted_as=300)
    history = history_of(conn, tmp_path)
    await history.posted_again(await stored(history, "b" * 16), CHANNEL, 201)  # /show
    assert await history.withdraw_deleted_channel(OTHER_GUILD, CHANNEL) == []  # not the server
    assert sorted(await history.withdraw_deleted_channel(GUILD, CHANNEL)) == ["a" * 16, "b" * 16]
    rows = await conn.execute_fetchall("SELECT message_id FROM job_messages ORDER BY message_id")
    assert [row[0] for row in rows] == [200, 300]  # /forget-me has none to delete in it
    await made(conn, "d" * 16, b"D" * 32)  # posted as the channel was deleted: recorded after
    await history.posted_again(await stored(history, "d" * 16), CHANNEL, 400)
    assert (await stored(history, "d" * 16)).withdrawn


async def test_a_deleted_channel_withdraws_its_threads_and_queued_jobs_but_no_twin(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Discord announces no archived thread of a deleted channel: its posts go with the
    channel (``parent_id``); a job queued there has no post yet; a newer twin elsewhere
    stays (a bot deletes temporary channels, whose owner may hold Manage Channels)."""
    history = history_of(conn, tmp_path)
    history.thread_parent = {THREAD: CHANNEL}.get
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    await made(conn, "t" * 16, BOAT, channel=THREAD)
    assert await history.result_posted("t" * 16, GUILD, THREAD, 200)
    await made(conn, "b" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, made_at=NOW + 1)
    request = RenderRequest("a lighthouse", seed=1, steps=2).to_json()
    queued = journal.NewJob("q" * 16, "imagine", OTHER_MEMBER, GUILD, CHANNEL, request, NOW)
    await journal.insert_job(conn, queued)
    withdrawn = await history.withdraw_deleted_channel(GUILD, CHANNEL)
    assert sorted(withdrawn) == ["a" * 16, "q" * 16, "t" * 16]
    assert not (await stored(history, "b" * 16)).withdrawn
    assert await conn.execute_fetchall("SELECT message_id FROM job_messages") == []
    # Nor later: the delivery gate and the erase's tombstones leave its pixels alone.
    assert not await history.pixels_withdrawn("b" * 16, GUILD)
    assert (await history.restore(GUILD, "t" * 16, admin_id=1)).with_it == []
    restored = await journal.get_job(conn, "t" * 16)
    assert restored is not None and not restored.withdrawn_with_channel
    await history.forget(MEMBER)
    assert await conn.execute_fetchall("SELECT * FROM withdrawn_pictures") == []


class _DeletedChannel(Sent):
    """A channel deleted while Easel was offline: Discord answers 10003 Unknown Channel."""

    async def send(self, content: str, **kwargs: Any) -> object:
        gone = SimpleNamespace(status=404, reason="Not Found")
        raise discord.NotFound(gone, {"code": 10003, "message": "Unknown Channel"})  # type: ignore[arg-type]


async def test_a_result_whose_channel_is_gone_is_withdrawn_and_its_maker_told(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Not a delivery failed and tried again at every start: withdrawn, refunded, told."""
    fake = FakeDiscord()
    fake.channel = _DeletedChannel()
    results = results_for(conn, fake)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        job_id = await queue.submit(submission())
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    assert results.history is not None
    assert (await stored(results.history, job_id)).withdrawn
    assert [content for content, _ in fake.direct.messages] == [
        f"Your job `{job_id}` in Guild was not posted: {CHANNEL_DELETED}. {REFUNDED}"
    ]
    assert (await spent_today(conn)).images == 0


async def test_a_stop_after_the_refund_of_a_result_whose_channel_is_gone_tells_it_again(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery finds the channel gone and Easel stops right after the refund: the next
    start reads the withdrawal with the channel (recorded before it), not a rule changed."""
    fake = FakeDiscord()
    fake.channel = _DeletedChannel()
    results = results_for(conn, fake)
    stopped_here = asyncio.Event()
    refunded = results._refunded

    async def refunded_then_stopped(job: object) -> bool:
        await refunded(job)  # type: ignore[arg-type]
        stopped_here.set()
        raise RuntimeError("Easel stops here")

    monkeypatch.setattr(results, "_refunded", refunded_then_stopped)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        job_id = await queue.submit(submission())
        await asyncio.wait_for(stopped_here.wait(), 20)
    finally:
        await queue.stop()
    again = await delivered_again(conn, tmp_path, job_id)
    assert again.direct.messages == [
        (f"Your job `{job_id}` in Guild was not posted: {CHANNEL_DELETED}. {REFUNDED}", [])
    ]
    assert again.channel.messages == []
    assert (await spent_today(conn)).images == 0


def _not_found(code: int) -> discord.NotFound:
    gone = SimpleNamespace(status=404, reason="Not Found")
    return discord.NotFound(gone, {"code": code, "message": "Unknown"})  # type: ignore[arg-type]


class _GoneWebhook:
    """The interaction's webhook while its token lives, its message gone: Discord answers
    ``code`` (10008 Unknown Message, or 10003 Unknown Channel)."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def edit_message(self, message_id: object, **kwargs: Any) -> None:
        raise _not_found(self.code)


class _ChannelGoneDiscord(FakeDiscord):
    async def fetch_channel(self, channel_id: int) -> object:
        raise _not_found(10003)


class _ChannelUnreadDiscord(FakeDiscord):
    """Discord does not say whether the channel is there: 503."""

    async def fetch_channel(self, channel_id: int) -> object:
        down = SimpleNamespace(status=503, reason="Service Unavailable")
        raise discord.HTTPException(down, "down")  # type: ignore[arg-type]


class _ChannelHiddenDiscord(FakeDiscord):
    """The channel is there, but Easel may no longer see it: 403 Missing Access."""

    async def fetch_channel(self, channel_id: int) -> object:
        hidden = SimpleNamespace(status=403, reason="Forbidden")
        raise discord.Forbidden(hidden, {"code": 50001, "message": "Missing Access"})  # type: ignore[arg-type]


async def test_a_progress_message_gone_in_a_channel_hidden_from_easel_went_alone(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Discord refusing to show the channel is an answer: it is there, so the message went
    alone (a moderator's deletion), and the job is withdrawn, not tried again until its
    token has expired and then posted in its maker's direct messages."""
    await made(conn, "a" * 16, LIGHTHOUSE)
    results = results_for(conn, _ChannelHiddenDiscord())
    history = results.history = history_of(conn, tmp_path)
    assert await results._went_with_its_channel("a" * 16, GUILD, CHANNEL) is False
    await results._progress_gone("a" * 16, GUILD, CHANNEL, None)
    job = await stored(history, "a" * 16)
    assert job.withdrawn
    record = await journal.get_job(conn, "a" * 16)
    assert record is not None and not record.withdrawn_with_channel


async def test_a_progress_message_found_gone_is_judged_by_what_discord_and_easel_know(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """No answer about its channel: the progress edit withdraws nothing (its delivery asks
    again), never as a moderator's deletion. A thread Easel heard deleted (discord.py
    announces a deleted channel's cached threads, forgetting their parent first) went with
    it, whatever Discord answers; an uncached thread of a deleted channel is Discord's to say."""
    await made(conn, "a" * 16, LIGHTHOUSE)
    results = results_for(conn, _ChannelUnreadDiscord())
    history = results.history = history_of(conn, tmp_path)
    await results._progress_gone("a" * 16, GUILD, CHANNEL, None)
    assert not (await stored(history, "a" * 16)).withdrawn
    await history.withdraw_deleted_channel(GUILD, CHANNEL)  # no THREAD_DELETE: uncached
    assert await results._went_with_its_channel("a" * 16, GUILD, THREAD) is None
    await history.withdraw_deleted_channel(GUILD, THREAD)  # a cached thread's announcement
    assert await results._went_with_its_channel("a" * 16, GUILD, THREAD)
    gone = results_for(conn, _ChannelGoneDiscord())
    gone.history = history_of(conn, tmp_path)
    assert await gone._went_with_its_channel("a" * 16, GUILD, THREAD)


def _editing_a_gone_message(
    results: DiscordResults, monkeypatch: pytest.MonkeyPatch, code: int
) -> Submission:
    """A job whose result edits its original response (its token lives), which Discord
    answers ``code`` (``_GoneWebhook``)."""
    monkeypatch.setattr(results, "_webhook", lambda _job: _GoneWebhook(code))
    monkeypatch.setattr(results, "_alive", lambda _job_id, _created_at: True)
    token = {"application_id": 1, "interaction_token": "t", "interaction_created_at": NOW}
    return Submission(
        "imagine", RenderRequest("a dog", seed=1, steps=2), MEMBER, GUILD, CHANNEL, **token
    )


@pytest.mark.parametrize("code", [10008, 10003])
async def test_a_result_whose_message_went_with_its_channel_is_refunded_and_reaches_no_twin(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Within the token's 15 minutes the result edits its original response: in a deleted
    channel that message is gone too, which is no moderator's deletion of it."""
    fake = _ChannelGoneDiscord()
    results = results_for(conn, fake)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        job_id = await queue.submit(_editing_a_gone_message(results, monkeypatch, code))
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_with_channel
    assert [content for content, _ in fake.direct.messages] == [
        f"Your job `{job_id}` in Guild was not posted: {CHANNEL_DELETED}. {REFUNDED}"
    ]
    assert (await spent_today(conn)).images == 0


async def test_a_result_whose_channel_discord_does_not_answer_for_is_tried_again_not_withdrawn(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its message is gone and Discord does not say whether its channel is: the delivery is
    tried again later, not judged a moderator's deletion (which withdraws its twins)."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # to the sweep at once
    results = results_for(conn, _ChannelUnreadDiscord())
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        job_id = await queue.submit(_editing_a_gone_message(results, monkeypatch, 10008))
        async with asyncio.timeout(20):  # until its try is judged: retried or withdrawn
            while True:
                job = await journal.get_job(conn, job_id)
                assert job is not None
                if job.delivery_retry_at is not None or job.withdrawn_at is not None:
                    break
                await asyncio.sleep(0.02)
    finally:
        await queue.stop()
    assert job.withdrawn_at is None and job.delivered_at is None


async def test_a_job_withdrawn_with_its_channel_reaches_no_twin_when_its_message_is_found_gone(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A progress edit or a delivery past the gate learns of the deleted message after the
    channel's deletion withdrew the job: the message went with the channel."""
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    await made(conn, "b" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, made_at=NOW + 1)
    history = history_of(conn, tmp_path)
    assert await history.withdraw_deleted_channel(GUILD, CHANNEL) == ["a" * 16]
    assert await history.withdraw_job("a" * 16, None) == []
    assert not (await stored(history, "b" * 16)).withdrawn


@pytest.mark.parametrize("stopped_after_the_refund", [False, True], ids=["once", "again"])
@pytest.mark.parametrize(
    ("made_in", "made_from", "why"),
    [
        (CHANNEL, None, CHANNEL_DELETED),
        (OTHER_CHANNEL, "a" * 16, SOURCE_CHANNEL_DELETED),
        (CHANNEL, "a" * 16, CHANNEL_DELETED),
    ],
    ids=["its-channel", "its-pictures-channel", "its-pictures-and-its-channel"],
)
async def test_a_result_withdrawn_with_its_channel_before_its_delivery_is_refunded(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made_in: int,
    made_from: str | None,
    why: str,
    stopped_after_the_refund: bool,
) -> None:
    """Rendered, then Easel stops before its delivery, and its channel is deleted, or (made
    elsewhere) the one of the picture it was made from: the next start tells its maker which
    went, not that its message was deleted, uncharged; also a start after one that stopped
    between the refund and telling them (the withdrawal recorded no why)."""
    await made(conn, "a" * 16, LIGHTHOUSE, posted_as=100)
    results = results_for(conn, FakeDiscord())
    stopped_here = asyncio.Event()

    async def crash(*_: object) -> None:
        stopped_here.set()
        raise RuntimeError("Easel stops here")

    monkeypatch.setattr(results, "deliver", crash)
    request = RenderRequest("a dog", seed=1, steps=2)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        job_id = await queue.submit(
            Submission("imagine", request, MEMBER, GUILD, made_in, parent_job_id=made_from)
        )
        await asyncio.wait_for(stopped_here.wait(), 20)
    finally:
        await queue.stop()
    history = history_of(conn, tmp_path)
    assert sorted(await history.withdraw_deleted_channel(GUILD, CHANNEL)) == sorted(
        ["a" * 16, job_id]
    )
    if stopped_after_the_refund:
        assert await accounting.refund_withheld(conn, job_id, NOW)
    again = await delivered_again(conn, tmp_path, job_id)
    assert again.direct.messages == [
        (f"Your job `{job_id}` in Guild was not posted: {why}. {REFUNDED}", [])
    ]
    assert (await spent_today(conn)).images == 0


async def test_the_upgrade_withdraws_the_same_pixels_made_after_a_job_withdrawn_before_it(
    tmp_path: Path,
) -> None:
    """Migration 0020 backfills the forward rule: the server's newer twins of a job a
    moderator withdrew, at its moment (a restore of it brings them back); not an older one,
    another server's, or a withheld job's."""
    conn = await aiosqlite.connect(tmp_path / "old.sqlite3", isolation_level=None)
    conn.row_factory = aiosqlite.Row
    try:
        for migration in load_migrations()[:19]:
            await conn.executescript(
                f"BEGIN;\n{migration.sql}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            )
        old = _inserted_as_at_0019
        await made(conn, "a" * 16, LIGHTHOUSE, made_at=NOW + 1, insert=old)
        await made(conn, "w" * 16, BOAT, made_at=NOW + 1, insert=old)
        withdrawn_before = "UPDATE jobs SET withdrawn_at = ?, withheld_why = ? WHERE id = ?"
        await conn.execute(withdrawn_before, (NOW + 5, None, "a" * 16))  # a moderator's
        await conn.execute(withdrawn_before, (NOW + 5, SAME_PICTURE_REMOVED, "w" * 16))
        await made(conn, "o" * 16, LIGHTHOUSE, insert=old)  # older than the withdrawn one
        await made(conn, "b" * 16, LIGHTHOUSE, channel=OTHER_CHANNEL, made_at=NOW + 2, insert=old)
        await made(conn, "c" * 16, LIGHTHOUSE, guild=OTHER_GUILD, made_at=NOW + 2, insert=old)
        await made(conn, "x" * 16, BOAT, made_at=NOW + 2, insert=old)  # a withheld job's twin
        # Made from the twin "b": its upscale, and a Vary undelivered or delivered.
        for job_id, kind, delivered in (("u", "upscale", True), ("v", "vary", False)):
            await made_from_b(conn, job_id * 16, kind, delivered=delivered)
        await made_from_b(conn, "d" * 16, "vary", delivered=True)  # posted: its own
        await migrate(conn)
        rows = await conn.execute_fetchall(
            "SELECT id FROM jobs WHERE withdrawn_at = ? ORDER BY id", (NOW + 5,)
        )
        assert [row[0] for row in rows] == [c * 16 for c in "abuvw"]
    finally:
        await conn.close()


async def _inserted_as_at_0019(conn: aiosqlite.Connection, job: journal.NewJob) -> None:
    """A job journaled as a schema-0019 database took it: none of the columns added since
    (today's ``insert_job`` names them)."""
    await conn.execute(
        "INSERT INTO jobs (id, kind, user_id, guild_id, channel_id, parent_job_id, request_json,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job.id,
            job.kind,
            job.user_id,
            job.guild_id,
            job.channel_id,
            job.parent_job_id,
            job.request_json,
            job.created_at,
        ),
    )


async def made_from_b(
    conn: aiosqlite.Connection, job_id: str, kind: str, *, delivered: bool
) -> None:
    request = RenderRequest("a lighthouse", seed=1, steps=2).to_json()
    made = journal.NewJob(job_id, kind, MEMBER, GUILD, CHANNEL, request, NOW + 3, "b" * 16)
    await _inserted_as_at_0019(conn, made)
    if delivered:
        await journal.mark_delivered(conn, job_id, NOW + 3)
