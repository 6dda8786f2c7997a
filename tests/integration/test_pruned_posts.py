"""Retention keeps the ids of the posts and copies by DM of the jobs it deletes
(``pruned_posts``), for their maker's /forget-me, and no longer than needed: a post deleted
(heard, or its channel or thread with it), a copy its member deleted, the copies in a
forgetting member's direct messages, those a /forget-me took, and those posted longer than
``KEPT_POSTS_DAYS`` ago go. Real SQLite files."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs import retention
from bot.snowflakes import made_before
from db import erasures
from db import history as store
from db import jobs as journal
from db.history import PostedMessage
from inference.types import RenderRequest

NOW = 1_800_000_000.0
MAKER, CLICKER, GUILD, CHANNEL, THREAD = 7, 8, 5, 50, 51
MAKERS_DMS, CLICKERS_DMS = 70, 80


async def delivered_job(
    conn: aiosqlite.Connection, job_id: str, made_at: float, user_id: int = MAKER
) -> None:
    """A job of the maker's (or ``user_id``'s), made at ``made_at``, done and delivered then."""
    request = RenderRequest("a barn", seed=1, steps=2)
    await journal.insert_job(
        conn,
        journal.NewJob(job_id, "imagine", user_id, GUILD, CHANNEL, request.to_json(), made_at),
    )
    await journal.mark_done(conn, job_id, [], 0.1, made_at)
    await journal.mark_delivered(conn, job_id, made_at)


async def kept_posts(conn: aiosqlite.Connection) -> list[int]:
    rows = await conn.execute_fetchall("SELECT message_id FROM pruned_posts ORDER BY message_id")
    return [int(row[0]) for row in rows]


async def posted_and_pruned(conn: aiosqlite.Connection) -> None:
    """One job of the maker's with its result (100), a U1 repost in a thread (101), and copies
    by DM in the clicker's (102) and the maker's (103) direct messages; deleted by retention."""
    await delivered_job(conn, "a" * 16, NOW)
    await journal.record_job_message(conn, "a" * 16, 100)
    await journal.record_job_message(
        conn, "a" * 16, 101, posted_in=(GUILD, THREAD), parent_id=CHANNEL
    )
    assert await store.record_copy(conn, "a" * 16, PostedMessage(CLICKERS_DMS, 102))
    assert await store.record_copy(conn, "a" * 16, PostedMessage(MAKERS_DMS, 103))
    pruned = await store.prune_jobs(conn, finished_before=NOW + 1, at_most=10)
    assert pruned.job_ids == ("a" * 16,)
    assert await kept_posts(conn) == [100, 101, 102, 103]


async def erase(conn: aiosqlite.Connection, asked_at: float = NOW + 10) -> store.ErasedData:
    return await store.erase_user(
        conn, MAKER, asked_at=asked_at, counted_since=asked_at, anonymise_at=asked_at
    )


async def test_the_makers_forget_me_deletes_the_kept_posts_and_counts_them(
    conn: aiosqlite.Connection,
) -> None:
    await posted_and_pruned(conn)
    assert await store.count_rows_of_user(conn, MAKER) == 4  # the kept posts name the maker
    await erasures.ask(conn, MAKER, NOW + 10, None)
    await store.forget_copies_in(conn, MAKERS_DMS)  # the maker's own copy: theirs to delete
    erased = await erase(conn)
    assert erased.posts == (
        PostedMessage(CHANNEL, 100),
        PostedMessage(THREAD, 101),
        PostedMessage(CLICKERS_DMS, 102),
    )
    counts = await erasures.counts(conn, MAKER)
    assert counts is not None and counts.posts == 3
    assert await store.pending_post_deletes(conn, NOW) == erased.posts
    assert await kept_posts(conn) == []
    assert await store.count_rows_of_user(conn, MAKER) == 0


async def test_a_forget_me_leaves_the_posts_of_jobs_made_after_it_was_asked(
    conn: aiosqlite.Connection,
) -> None:
    """A start erasing again what a database put back held (``saved_up_to``) erases what was
    made up to the request: a later job's kept post stays."""
    await delivered_job(conn, "b" * 16, NOW + 20)
    await journal.record_job_message(conn, "b" * 16, 200)
    await store.prune_jobs(conn, finished_before=NOW + 21, at_most=10)
    assert (await erase(conn, asked_at=NOW + 10)).posts == ()
    assert await kept_posts(conn) == [200]


async def test_a_forget_me_takes_many_kept_posts_in_batches(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    await posted_and_pruned(conn)
    assert len((await erase(conn)).posts) == 4
    assert await kept_posts(conn) == []


async def test_a_deleted_post_or_copy_is_no_longer_kept(conn: aiosqlite.Connection) -> None:
    await posted_and_pruned(conn)
    # The result deleted in its channel; an id in another channel matches nothing.
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL + 9, [100], NOW)
    assert await kept_posts(conn) == [100, 101, 102, 103]
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [100], NOW)
    assert await kept_posts(conn) == [101, 102, 103]
    await store.copy_deleted(conn, 102)  # its member's Delete
    assert await kept_posts(conn) == [101, 103]
    await store.forget_copies_in(conn, MAKERS_DMS)  # the maker's own /forget-me
    assert await kept_posts(conn) == [101]


async def test_a_deleted_channel_takes_its_threads_kept_posts(conn: aiosqlite.Connection) -> None:
    await posted_and_pruned(conn)
    await store.withdraw_channel_results(conn, GUILD, CHANNEL, NOW)
    await store.forget_posts_of_deleted_channels(conn)  # as History runs it, after the stop
    assert await kept_posts(conn) == [102, 103]


async def test_a_database_put_back_with_kept_posts_erases_them_again(
    conn: aiosqlite.Connection,
) -> None:
    """The record outside the database names a request this one does not know it carried
    out: the kept posts alone are reason enough to erase again."""
    await posted_and_pruned(conn)
    [again] = await erasures.ask_again(conn, {MAKER: NOW + 10})
    assert (again.user_id, again.asked_at, again.again) == (MAKER, NOW + 10, True)


async def test_a_kept_post_goes_a_year_after_it_was_posted_in_batches(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read by its id's time (a snowflake's), whatever the retention (0 too): the posts of
    the last ``KEPT_POSTS_DAYS`` stay, for the maker's /forget-me."""
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    year_ago = NOW - retention.KEPT_POSTS_DAYS * retention.DAY_S
    older = [made_before(year_ago - days * retention.DAY_S) for days in (300, 2, 1)]
    newer = [made_before(year_ago) + 1, made_before(NOW - 60)]
    await delivered_job(conn, "c" * 16, NOW - 700 * retention.DAY_S)
    for message_id in (*older, *newer):
        await journal.record_job_message(conn, "c" * 16, message_id)
    await store.prune_jobs(conn, finished_before=NOW, at_most=10)
    assert await kept_posts(conn) == [*older, *newer]
    rounds = retention.Retention(conn, tmp_path / "images", tmp_path / "inputs", 0, lambda: NOW)
    assert (await rounds.prune()).kept_posts == 3
    assert await kept_posts(conn) == newer
    assert [post.message_id for post in (await erase(conn)).posts] == newer


async def test_a_forget_me_under_way_keeps_its_members_posts_past_the_year(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /forget-me journaled and not yet told (in its batches, failed, or asked again after
    a backup was put back) takes the posts of when its member asked: a round meanwhile leaves
    their posts past the year, as does a round before the start erases again; others' go."""
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    year_ago = NOW - retention.KEPT_POSTS_DAYS * retention.DAY_S
    makers = [made_before(year_ago - days * retention.DAY_S) for days in (3, 2, 1)]
    clickers = made_before(year_ago - 4 * retention.DAY_S)
    await delivered_job(conn, "d" * 16, NOW - 700 * retention.DAY_S)
    await delivered_job(conn, "e" * 16, NOW - 700 * retention.DAY_S, user_id=CLICKER)
    for job_id, message_id in (*(("d" * 16, made) for made in makers), ("e" * 16, clickers)):
        await journal.record_job_message(conn, job_id, message_id)
    await store.prune_jobs(conn, finished_before=NOW, at_most=10)
    rounds = retention.Retention(conn, tmp_path / "images", tmp_path / "inputs", 0, lambda: NOW)
    assert (await rounds.prune(before_start=True)).kept_posts == 0
    asked = await erasures.ask(conn, MAKER, year_ago - 10, None)
    assert (await rounds.prune()).kept_posts == 1  # the clicker's alone
    assert await kept_posts(conn) == makers
    assert [post.message_id for post in (await erase(conn, asked.asked_at)).posts] == makers
