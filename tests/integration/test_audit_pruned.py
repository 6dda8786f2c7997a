"""Each server's audit log keeps its latest ``AUDIT_ROWS_KEPT`` rows (AUD21): a script adding
and removing one word 10,000 times wrote 10,000 rows nothing ever deleted. The retention
round cuts every server's log to its latest rows, whatever EASEL_RETENTION_DAYS (0 too)."""

from __future__ import annotations

import itertools
from pathlib import Path

import aiosqlite

from bot.jobs.retention import AUDIT_ROWS_KEPT, Pruned, Retention
from db import guild_settings as store
from db.guild_settings import GuildList

BUSY_SERVER, QUIET_SERVER, ADMIN = 1, 2, 9
OVER = 5


async def test_retention_keeps_each_servers_latest_audit_rows(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    clock = itertools.count(1_000.0)
    for add in itertools.islice(itertools.cycle((True, False)), AUDIT_ROWS_KEPT + OVER):
        await store.change_list(
            conn, BUSY_SERVER, ADMIN, GuildList.BANNED_WORD, "dog", add=add, now=next(clock)
        )
    for model in ("a", "b", "c"):
        await store.change_list(
            conn, QUIET_SERVER, ADMIN, GuildList.ALLOWED_MODEL, model, add=True, now=next(clock)
        )
    latest = await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT)

    retention = Retention(conn, tmp_path / "images", tmp_path / "inputs", 0)
    assert await retention.prune() == Pruned(audit_rows=OVER)

    kept = await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT + OVER)
    assert kept == latest  # the latest, the oldest gone
    assert len(await store.audit_log(conn, QUIET_SERVER, 10)) == 3
    assert await retention.prune() == Pruned()
