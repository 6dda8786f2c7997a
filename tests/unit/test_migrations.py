import logging
import sqlite3
from pathlib import Path

import pytest

from bot.history import MODERATOR_WITHDRAWAL_AUDITED_AS, WITHDRAWAL_AUDITED_AS
from db import history as member_data
from db import jobs as journal
from db.database import check_sqlite_version, connect, load_migrations, schema_version
from tests.support.discord_clock import SNOWFLAKE_CLOCK
from tests.support.older_databases import database_at


def test_migrations_are_numbered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))


async def test_fresh_database_reaches_latest_version_in_wal(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        assert await schema_version(conn) == len(load_migrations())
        async with conn.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == "wal"
        async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        assert {"jobs", "images"} <= tables
    finally:
        await conn.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    conn = await connect(path)
    await conn.execute(
        "INSERT INTO jobs (id, kind, user_id, request_json, created_at) "
        "VALUES ('a', 'x', 1, '{}', 0)"
    )
    await conn.close()
    conn = await connect(path)
    try:
        async with conn.execute("SELECT count(*) FROM jobs") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == 1
    finally:
        await conn.close()


async def test_a_migration_says_once_from_which_schema_to_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = database_at(tmp_path / "easel.sqlite3", 10)
    caplog.set_level(logging.INFO, logger="db.database")
    await (await connect(path)).close()
    latest = len(load_migrations())
    said = [r.getMessage() for r in caplog.records if r.name == "db.database"]
    assert said == [f"migrating schema 10 -> {latest}"]
    caplog.clear()
    await (await connect(path)).close()
    assert [r for r in caplog.records if r.name == "db.database"] == []  # nothing pending


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(load_migrations()) + 5}")
    with pytest.raises(RuntimeError, match="upgrade Easel"):
        await connect(path)


async def test_a_journal_from_before_0026_keeps_its_delivered_job_and_its_post(
    tmp_path: Path,
) -> None:
    """0026 drops ``jobs.result_message_id`` from a table that views and triggers read (0023):
    a delivered job of the older schema reads back, its post still one of its posts."""
    path = tmp_path / "easel.sqlite3"
    job_id = "a" * 16
    with sqlite3.connect(path, isolation_level=None) as raw:
        for migration in load_migrations()[:25]:
            raw.executescript(
                f"BEGIN;\n{migration.sql}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            )
        raw.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at, finished_at, delivered_at, result_message_id)"
            " VALUES (?, 'imagine', 'done', 1, 5, 50, '{}', 0, 1, 2, 77)",
            (job_id,),
        )
        raw.execute(
            "INSERT INTO job_messages (message_id, job_id, guild_id, channel_id)"
            " VALUES (77, ?, 5, 50)",
            (job_id,),
        )
    conn = await connect(path)
    try:
        assert await schema_version(conn) == len(load_migrations())
        job = await journal.get_job(conn, job_id)
        assert job is not None and job.delivered_at == 2
        assert await journal.first_posts_in(conn, job_id, 50, **SNOWFLAKE_CLOCK) == (77,)
        columns = {row[1] for row in await conn.execute_fetchall("PRAGMA table_info(jobs)")}
        assert "result_message_id" not in columns
    finally:
        await conn.close()


def test_an_sqlite_too_old_for_the_migrations_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match=r"SQLite 3\.34\.1 is too old: Easel needs 3\.35\.5"):
        check_sqlite_version((3, 34, 1))
    check_sqlite_version((3, 35, 5))
    check_sqlite_version(sqlite3.sqlite_version_info)


async def test_jobs_stopped_before_0037_keep_the_reading_of_then(tmp_path: Path) -> None:
    """0037 records who first stopped a job: a job stopped before it reads as a moderator's
    stop where its withdrawal's audit row was written at its withdrawal's time (the reading
    of then), and as nobody's otherwise (not a moderator's, as then)."""
    path = database_at(tmp_path / "easel.sqlite3", 36)
    stops = {"by_a_moderator": 50.0, "withdrawn_by_deletion": 60.0, "by_its_maker": None}
    with sqlite3.connect(path, isolation_level=None) as raw:
        for job_id, withdrawn_at in stops.items():
            raw.execute(
                "INSERT INTO jobs (id, kind, status, user_id, guild_id, request_json,"
                " created_at, finished_at, withdrawn_at)"
                " VALUES (?, 'imagine', 'cancelled', 1, 5, '{}', 0, 1, ?)",
                (job_id, withdrawn_at),
            )
        for setting, at in (
            (MODERATOR_WITHDRAWAL_AUDITED_AS, 50.0),
            (WITHDRAWAL_AUDITED_AS, 60.0),
        ):
            raw.execute(
                "INSERT INTO settings_audit (guild_id, user_id, setting, at) VALUES (5, 9, ?, ?)",
                (setting, at),
            )
    conn = await connect(path)
    try:
        read = {job_id: await journal.get_job(conn, job_id) for job_id in stops}
        stoppers = {job_id: job.stopped_by for job_id, job in read.items() if job is not None}
        assert stoppers == {
            "by_a_moderator": journal.StoppedBy.MODERATOR,
            "withdrawn_by_deletion": None,
            "by_its_maker": None,
        }
    finally:
        await conn.close()


async def test_jobs_journaled_before_0041_have_no_thread_parent_and_count_as_elsewhere(
    tmp_path: Path,
) -> None:
    """0041 records a thread's channel with its job: a job journaled before it reads None (its
    delivery asks Discord, as then), and counts among those a first listed channel ends; one
    journaled after it in a thread of that channel does not."""
    path = database_at(tmp_path / "easel.sqlite3", 40)
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at) VALUES ('before', 'imagine', 'queued', 1, 5, 51, '{}', 0)"
        )
    conn = await connect(path)
    try:
        before = await journal.get_job(conn, "before")
        assert before is not None and before.thread_parent_id is None
        await journal.insert_job(
            conn,
            journal.NewJob(
                id="after",
                kind="imagine",
                user_id=1,
                guild_id=5,
                channel_id=52,
                request_json="{}",
                created_at=1,
                thread_parent_id=50,
            ),
        )
        after = await journal.get_job(conn, "after")
        assert after is not None and after.thread_parent_id == 50
        assert await journal.unfinished_outside(conn, 5, [50]) == 1  # "before" alone
        assert await journal.unfinished_outside(conn, 5, [51]) == 1  # "after", in another's thread
    finally:
        await conn.close()


async def test_posts_recorded_before_0042_are_kept_when_retention_deletes_their_job(
    tmp_path: Path,
) -> None:
    """0042 keeps the ids of a pruned job's posts and copies by DM for its maker's /forget-me:
    a job delivered under 0041, its post and a copy recorded then, pruned after the upgrade,
    leaves both for that /forget-me to delete."""
    path = database_at(tmp_path / "easel.sqlite3", 41)
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at, finished_at, delivered_at) VALUES ('old', 'imagine', 'done', 1, 5, 50,"
            " '{}', 0, 1, 2)"
        )
        raw.execute(
            "INSERT INTO job_messages (message_id, job_id, guild_id, channel_id)"
            " VALUES (77, 'old', 5, 50)"
        )
        raw.execute(
            "INSERT INTO job_copies (message_id, job_id, channel_id) VALUES (78, 'old', 80)"
        )
    conn = await connect(path)
    try:
        assert (await member_data.prune_jobs(conn, 10.0, at_most=10)).job_ids == ("old",)
        erased = await member_data.erase_user(
            conn, 1, asked_at=10.0, counted_since=10.0, anonymise_at=10.0
        )
        assert erased.posts == (
            member_data.PostedMessage(50, 77),
            member_data.PostedMessage(80, 78),
        )
    finally:
        await conn.close()
