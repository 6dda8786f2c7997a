"""A deleted channel's kept posts (``pruned_posts``: years of them, with no job to withdraw) go
after its withdrawal's transaction and the stop of its queued jobs, a batch per transaction, so
that other commands run between; a failure or a stop between leaves them recorded for the next
retention round, which takes them, and its jobs stopped. Real SQLite files, the real retention."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import pytest

from bot.history import History
from bot.jobs.retention import Retention
from bot.policy.member_settings import MemberSettings
from bot.snowflakes import made_before
from db import history as store
from db import jobs as journal
from db.database import connect
from tests.conftest import ErrorLogs
from tests.integration.test_pruned_posts import NOW, kept_posts

GUILD, CHANNEL, THREAD, OTHER_CHANNEL = 5, 50, 51, 60
# Posts of retention's pruned jobs, made a minute ago (within the year they are kept): three
# in the channel, two in its thread, one elsewhere.
POSTED = made_before(NOW - 60)
IN_CHANNEL = {POSTED: (CHANNEL, None), POSTED + 1: (CHANNEL, None), POSTED + 2: (CHANNEL, None)}
IN_THREAD = {POSTED + 3: (THREAD, CHANNEL), POSTED + 4: (THREAD, CHANNEL)}
ELSEWHERE = {POSTED + 5: (OTHER_CHANNEL, None)}


async def kept_and_queued(conn: aiosqlite.Connection, *, delivered: bool = False) -> str:
    """The kept posts above, and a job of the channel, queued there (or delivered there)."""
    for message_id, (channel_id, parent_id) in {**IN_CHANNEL, **IN_THREAD, **ELSEWHERE}.items():
        await conn.execute(
            "INSERT INTO pruned_posts (message_id, user_id, channel_id, parent_id, made_at)"
            " VALUES (?, 7, ?, ?, ?)",
            (message_id, channel_id, parent_id, NOW - 60),
        )
    await conn.commit()
    job_id = "a" * 16
    await journal.insert_job(
        conn, journal.NewJob(job_id, "imagine", 7, GUILD, CHANNEL, '{"prompt": "a barn"}', NOW)
    )
    if delivered:
        await journal.mark_done(conn, job_id, [], 0.1, NOW)
        await journal.mark_delivered(conn, job_id, NOW)
        await journal.record_job_message(conn, job_id, POSTED + 6)
    return job_id


def history_stopping_into(
    conn: aiosqlite.Connection, tmp_path: Path, stops: list[object]
) -> History:
    """The real ``History``, whose queue's stop of withdrawn jobs is noted in ``stops``."""
    history = History(
        conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn), lambda: NOW
    )

    async def stop_withdrawn(withdrawn: list[str]) -> list[str]:
        stops.append(("stopped", withdrawn))
        return withdrawn

    history.stop_withdrawn = stop_withdrawn
    return history


def commits_noted_into(monkeypatch: pytest.MonkeyPatch, notes: list[object]) -> None:
    """Each of db.history's transactions notes, as it commits, how many of the channel's and
    its thread's kept posts are left."""
    one_transaction = store.transaction

    @asynccontextmanager
    async def noted(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
        async with one_transaction(conn):
            yield conn
            notes.append(len(set(await kept_posts(conn)) - set(ELSEWHERE)))

    monkeypatch.setattr(store, "transaction", noted)


def failing_transaction(monkeypatch: pytest.MonkeyPatch, failure: Exception, nth: int) -> None:
    """db.history's ``nth`` transaction from now raises ``failure`` before its commit (it is
    rolled back, as a stop there leaves it)."""
    one_transaction = store.transaction
    begun = 0

    @asynccontextmanager
    async def failing(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
        nonlocal begun
        async with one_transaction(conn):
            yield conn
            begun += 1
            if begun == nth:
                raise failure

    monkeypatch.setattr(store, "transaction", failing)


async def deleted_channels_left(conn: aiosqlite.Connection) -> list[int]:
    rows = await conn.execute_fetchall("SELECT channel_id FROM deleted_channels_kept_posts")
    return [int(row[0]) for row in rows]


async def test_a_deleted_channels_kept_posts_go_a_batch_per_transaction_after_its_stop(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    job_id = await kept_and_queued(conn)
    notes: list[object] = []
    history = history_stopping_into(conn, tmp_path, notes)
    commits_noted_into(monkeypatch, notes)

    assert await history.withdraw_deleted_channel(GUILD, CHANNEL) == [job_id]

    # The withdrawal's transaction takes none of the five; its job is stopped; then 2, 2 and
    # 1 go, each in a transaction of its own.
    assert notes == [5, ("stopped", [job_id]), 3, 1, 0]
    assert await kept_posts(conn) == list(ELSEWHERE)
    assert await deleted_channels_left(conn) == []


async def test_a_failing_batch_leaves_the_withdrawn_job_stopped_and_its_posts_recorded(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    job_id = await kept_and_queued(conn)
    stops: list[object] = []
    history = history_stopping_into(conn, tmp_path, stops)
    # The withdrawal's transaction, the first batch, then the second batch fails.
    failing_transaction(monkeypatch, sqlite3.OperationalError("database or disk is full"), 3)
    error_logs.expect("left to the next retention round")

    assert await history.withdraw_deleted_channel(GUILD, CHANNEL) == [job_id]

    assert stops == [("stopped", [job_id])]
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_with_channel
    # The first batch went; the second rolled back: three wait, recorded.
    assert len(set(await kept_posts(conn)) - set(ELSEWHERE)) == 3
    assert await deleted_channels_left(conn) == [CHANNEL]
    [logged] = error_logs.records
    assert logged.exc_info is not None and "disk is full" in str(logged.exc_info[1])


async def test_a_stop_after_the_second_batch_leaves_the_rest_to_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "PRUNED_POSTS_BATCH", 2)
    path = tmp_path / "easel.sqlite3"
    conn = await connect(path)
    try:
        job_id = await kept_and_queued(conn, delivered=True)
        assert await store.withdraw_channel_results(conn, GUILD, CHANNEL, NOW) == [job_id]
        # The process stops in the third batch: two have committed.
        failing_transaction(monkeypatch, RuntimeError("the process stopped here"), 3)
        with pytest.raises(RuntimeError):
            await store.forget_posts_of_deleted_channels(conn)
    finally:
        await conn.close()
    monkeypatch.undo()

    conn = await connect(path)  # the next start
    try:
        job = await journal.get_job(conn, job_id)
        assert job is not None and job.withdrawn_with_channel
        assert len(set(await kept_posts(conn)) - set(ELSEWHERE)) == 1
        assert await deleted_channels_left(conn) == [CHANNEL]

        rounds = Retention(conn, tmp_path / "images", tmp_path / "inputs", 0, lambda: NOW)
        assert (await rounds.prune()).kept_posts == 1

        assert await kept_posts(conn) == list(ELSEWHERE)
        assert await deleted_channels_left(conn) == []
    finally:
        await conn.close()
