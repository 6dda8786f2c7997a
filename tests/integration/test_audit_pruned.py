"""Each server's audit log keeps its latest ``AUDIT_ROWS_KEPT`` rows (AUD21): a script adding
and removing one word 10,000 times wrote 10,000 rows nothing ever deleted. The retention
round cuts every server's log to its latest rows, whatever EASEL_RETENTION_DAYS (0 too)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import aiosqlite

from bot.jobs.retention import AUDIT_ROWS_KEPT, Pruned, Retention
from db import guild_settings as store
from db.guild_settings import GuildList

BUSY_SERVER, QUIET_SERVER, ADMIN = 1, 2, 9
OVER = 5


async def changes(
    conn: aiosqlite.Connection, clock: Iterator[float], server: int, count: int
) -> None:
    """``count`` audited changes on ``server``: a word added, removed, added..."""
    for add in itertools.islice(itertools.cycle((True, False)), count):
        await store.change_list(
            conn, server, ADMIN, GuildList.BANNED_WORD, "dog", add=add, now=next(clock)
        )


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


async def test_a_later_round_prunes_the_servers_written_to_since_the_last(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """After the first round (every server), a round reads only the servers with audit rows
    written since the last: a server at its limit that an admin then changes again is cut
    back, and one with a change since, under its limit, keeps all of its rows."""
    clock = itertools.count(1_000.0)
    await changes(conn, clock, BUSY_SERVER, AUDIT_ROWS_KEPT)
    await changes(conn, clock, QUIET_SERVER, 2)  # the word added, then removed
    retention = Retention(conn, tmp_path / "images", tmp_path / "inputs", 0)
    assert await retention.prune() == Pruned()

    await changes(conn, clock, BUSY_SERVER, OVER)
    await changes(conn, clock, QUIET_SERVER, 1)
    latest = await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT)
    assert await retention.prune() == Pruned(audit_rows=OVER)
    assert await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT + OVER) == latest
    assert len(await store.audit_log(conn, QUIET_SERVER, 10)) == 3


async def test_the_one_row_since_the_last_round_on_a_server_at_its_limit_is_cut(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The boundaries: a server exactly at its limit is left alone; the one row written
    since that round (the last row there is) is read by the next, which cuts the server,
    one row over its limit, back to exactly ``AUDIT_ROWS_KEPT``."""
    clock = itertools.count(1_000.0)
    await changes(conn, clock, BUSY_SERVER, AUDIT_ROWS_KEPT)  # the word added, then removed
    retention = Retention(conn, tmp_path / "images", tmp_path / "inputs", 0)
    assert await retention.prune() == Pruned()

    await changes(conn, clock, BUSY_SERVER, 1)
    latest = await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT)
    assert await retention.prune() == Pruned(audit_rows=1)
    assert await store.audit_log(conn, BUSY_SERVER, AUDIT_ROWS_KEPT + OVER) == latest
