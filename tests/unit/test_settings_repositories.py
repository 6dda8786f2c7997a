"""db.user_settings, db.guild_settings and db.history against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from db import guild_settings, history, user_settings
from db import jobs as journal
from db.database import connect
from db.guild_settings import GuildList
from db.user_settings import UserSettings


async def test_user_settings_round_trip(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        assert await user_settings.get(conn, 1) == UserSettings()
        saved = UserSettings(steps=9, cfg=4.5, size="16:9", private_results=True)
        await user_settings.put(conn, 1, saved, now=1.0)
        assert await user_settings.get(conn, 1) == saved
    finally:
        await conn.close()


async def test_guild_changes_are_audited_and_lists_are_sets(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        assert await guild_settings.change_list(
            conn, 7, 100, GuildList.BANNED_WORD, "gore", add=True, now=1.0
        )
        assert not await guild_settings.change_list(
            conn, 7, 100, GuildList.BANNED_WORD, "gore", add=True, now=2.0
        )
        await guild_settings.set_value(conn, 7, 101, "nsfw_policy", "spoiler", now=3.0)
        settings = await guild_settings.get(conn, 7)
        assert settings.entries(GuildList.BANNED_WORD) == {"gore"}
        assert settings.nsfw_policy == "spoiler"
        assert (await guild_settings.get(conn, 8)).entries(GuildList.BANNED_WORD) == frozenset()
        log = await guild_settings.audit_log(conn, 7, limit=10)
        assert [(e.user_id, e.setting, e.old_value, e.new_value) for e in log] == [
            (101, "nsfw_policy", "allow", "spoiler"),
            (100, "banned_word", None, "gore"),
        ]
    finally:
        await conn.close()


async def _job(
    conn: aiosqlite.Connection, job_id: str, user_id: int, prompt: str, at: float
) -> None:
    await journal.insert_job(
        conn,
        journal.NewJob(job_id, "imagine", user_id, 7, 9, f'{{"prompt": "{prompt}"}}', at),
    )


async def test_history_search_paging_and_erase_only_touch_one_member(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        for index in range(3):
            await _job(conn, f"{index:016x}", 1, f"cat {index}", float(index))
        await _job(conn, "f" * 16, 2, "cat of someone else", 10.0)
        await _job(conn, "e" * 16, 1, "100%_literal", 11.0)
        # The member's job in another server is not part of this server's history.
        await journal.insert_job(
            conn, journal.NewJob("d" * 16, "imagine", 1, 8, 9, '{"prompt": "cat 9"}', 12.0)
        )
        page = await history.page_of_jobs(conn, 1, guild_id=7, search="CAT", limit=2, offset=0)
        assert [e.job_id for e in page] == [f"{2:016x}", f"{1:016x}"]
        assert await history.count_of_jobs(conn, 1, guild_id=7, search="CAT") == 3
        literal = await history.count_of_jobs(conn, 1, guild_id=7, search="0%_")
        assert literal == 1  # % and _ are matched literally
        # No search: every job of the member here, no request parsed.
        assert await history.count_of_jobs(conn, 1, guild_id=7, search=None) == 4
        newest = await history.page_of_jobs(conn, 1, guild_id=7, search=None, limit=1, offset=0)
        assert [e.job_id for e in newest] == ["e" * 16]
        for job_id in [f"{i:016x}" for i in range(3)] + ["e" * 16, "d" * 16]:
            await journal.mark_failed(conn, job_id, "boom", now=12.0)
        erased = await history.erase_user(
            conn, 1, asked_at=13.0, counted_since=0.0, anonymise_at=0.0
        )
        assert erased.jobs == 5  # in every server
        assert await history.count_rows_of_user(conn, 1) == 0
        assert await history.count_rows_of_user(conn, 2) == 1
    finally:
        await conn.close()
