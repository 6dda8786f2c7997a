"""/forget-me's journal (table ``erasures`` from ``0028_erasures.sql``): each member's request,
written before its first batch, its progress counted with each batch, deleted once the member
is told, then marked carried out (``erasures_done``, ``0036_erasures_done.sql``). A start
finishes the requests a stop left (``bot.history.History.resume``), and journals again those a
database put back from a backup undid (``ask_again``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import aiosqlite

from db.database import transaction

# Requests ``ask_again`` compares in one statement: two values bound each, under SQLite's
# limit of 32,766.
_REQUESTS_BOUND_AT_ONCE = 10_000
# Each member's latest request carried out: an earlier one marked later never lowers it.
_LATEST_DONE = (
    "ON CONFLICT (user_id) DO UPDATE SET asked_at = max(erasures_done.asked_at, excluded.asked_at)"
)


@dataclass(frozen=True)
class ReplyToken:
    """The interaction a member asked in, whose token answers them while it lives."""

    application_id: int
    token: str


@dataclass(frozen=True)
class Erasure:
    """One member's request: erase what they made up to ``asked_at``. ``again``: journaled
    again at start from the record outside the database (``ask_again``), not by its member:
    settings, presets and refusals go only where dated up to ``asked_at``."""

    user_id: int
    asked_at: float
    reply: ReplyToken | None
    again: bool = False


@dataclass(frozen=True)
class ErasureCounts:
    """What a request erased in all its runs (a resumed or repeated run adds its part)."""

    jobs: int
    pictures: int
    uploads: int
    posts: int
    ledger_rows_anonymised: int
    ledger_rows_deferred: int
    broker_copies_left: bool


@dataclass(frozen=True)
class Asked:
    """``ask``'s answer: the time the request was journaled with (``asked_at``), or, nothing
    written, the member's jobs queued or running (``unfinished``)."""

    asked_at: float
    unfinished: list[str]


async def ask(
    conn: aiosqlite.Connection, user_id: int, now: float, reply: ReplyToken | None
) -> Asked:
    """Journal the member's request, unless one of their jobs is queued or running: then
    nothing is written, and those jobs are returned (the queue still owns them). It is asked
    at ``now``, or at the newest of their jobs' ``created_at`` if later: the queue's clock
    never goes back, and a wall clock stepped back must not leave jobs made before the request
    out of it. Asked again (a request a stop or a failure left), the request takes the new
    time and token and keeps what it counted."""
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            "SELECT id FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')"
            " ORDER BY created_at, rowid",
            (user_id,),
        )
        if rows:
            return Asked(now, [str(row[0]) for row in rows])
        newest = await conn.execute_fetchall(
            "SELECT MAX(created_at) FROM jobs WHERE user_id = ?", (user_id,)
        )
        made_at = next(iter(newest))[0]
        asked_at = now if made_at is None else max(now, float(made_at))
        await conn.execute(
            "INSERT INTO erasures (user_id, asked_at, application_id, interaction_token)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
            " asked_at = excluded.asked_at, application_id = excluded.application_id,"
            " interaction_token = excluded.interaction_token, again = 0",
            (
                user_id,
                asked_at,
                None if reply is None else reply.application_id,
                None if reply is None else reply.token,
            ),
        )
    return Asked(asked_at, [])


async def ask_again(conn: aiosqlite.Connection, asked: Mapping[int, float]) -> list[Erasure]:
    """Journal again, with no interaction to answer, each request of ``asked`` (member: when
    they asked, from the record outside the database) that this database does not know it
    carried out (``erasures_done``: only one put back from a backup taken before the request
    lacks it) and whose member it still holds something of dated up to then: their jobs,
    ledger rows not anonymised nor waiting to be, settings, own presets, refusals or the
    posts retention kept of their jobs (``pruned_posts``) (a
    request's own journal row, asked then or since, is left to its own run). One that finds
    nothing, nor a journal row, is marked carried out here. Set-based: a start with many
    requests recorded costs a few statements, not one per member. Returns the requests
    journaled."""
    async with transaction(conn):
        unknown = await _not_known_done(conn, asked)
        if not unknown:
            return []
        # Bound, not read from JSON: each time must compare equal to the one journaled.
        await conn.execute(
            "CREATE TEMP TABLE asked_again (user_id INTEGER PRIMARY KEY, asked_at REAL NOT NULL)"
        )
        await conn.executemany("INSERT INTO temp.asked_again VALUES (?, ?)", unknown)
        rows = await conn.execute_fetchall(
            "INSERT INTO erasures (user_id, asked_at, again) SELECT a.user_id, a.asked_at, 1"
            " FROM temp.asked_again AS a WHERE"
            " EXISTS (SELECT 1 FROM jobs WHERE user_id = a.user_id AND created_at <= a.asked_at)"
            " OR EXISTS (SELECT 1 FROM quota_ledger WHERE user_id = a.user_id"
            " AND at <= a.asked_at AND anonymise_at IS NULL)"
            " OR EXISTS (SELECT 1 FROM user_settings WHERE user_id = a.user_id"
            " AND updated_at <= a.asked_at)"
            " OR EXISTS (SELECT 1 FROM presets WHERE scope = 'member' AND owner_id = a.user_id"
            " AND updated_at <= a.asked_at)"
            " OR EXISTS (SELECT 1 FROM refusals WHERE user_id = a.user_id"
            " AND created_at <= a.asked_at)"
            " OR EXISTS (SELECT 1 FROM pruned_posts WHERE user_id = a.user_id"
            " AND made_at <= a.asked_at)"
            " ON CONFLICT (user_id) DO UPDATE SET asked_at = excluded.asked_at,"
            " application_id = NULL, interaction_token = NULL, again = 1"
            " WHERE excluded.asked_at > erasures.asked_at"
            " RETURNING user_id, asked_at"
        )
        await conn.execute(
            "INSERT INTO erasures_done (user_id, asked_at) SELECT a.user_id, a.asked_at"
            " FROM temp.asked_again AS a"
            " WHERE NOT EXISTS (SELECT 1 FROM erasures WHERE user_id = a.user_id)"
            f" {_LATEST_DONE}"
        )
        await conn.execute("DROP TABLE temp.asked_again")
    again = sorted((int(user_id), float(at)) for user_id, at in rows)
    return [Erasure(user_id, at, None, again=True) for user_id, at in again]


async def _not_known_done(
    conn: aiosqlite.Connection, asked: Mapping[int, float]
) -> list[tuple[int, float]]:
    """The requests of ``asked`` that ``erasures_done`` does not hold, or holds only an
    earlier one of, by member. Only those come back: each batch of requests is bound (never
    read from JSON, so each time compares equal to the one journaled) and compared there."""
    requests = sorted(asked.items())
    unknown: list[tuple[int, float]] = []
    for start in range(0, len(requests), _REQUESTS_BOUND_AT_ONCE):
        batch = requests[start : start + _REQUESTS_BOUND_AT_ONCE]
        rows = await conn.execute_fetchall(
            "SELECT a.column1 FROM (VALUES " + ", ".join(["(?, ?)"] * len(batch)) + ") AS a"
            " WHERE NOT EXISTS (SELECT 1 FROM erasures_done"
            " WHERE user_id = a.column1 AND asked_at >= a.column2)",
            [value for request in batch for value in request],
        )
        missing = {int(row[0]) for row in rows}
        unknown += [(user_id, at) for user_id, at in batch if user_id in missing]
    return unknown


async def unfinished(conn: aiosqlite.Connection) -> list[Erasure]:
    """The requests not yet told done, oldest first."""
    rows = await conn.execute_fetchall(
        "SELECT user_id, asked_at, application_id, interaction_token, again FROM erasures"
        " ORDER BY asked_at, user_id"
    )
    return [
        Erasure(
            int(user_id),
            float(asked_at),
            None if token is None else ReplyToken(int(application_id), str(token)),
            again=bool(again),
        )
        for user_id, asked_at, application_id, token, again in rows
    ]


async def asked_at(conn: aiosqlite.Connection, user_id: int) -> float | None:
    """When the member's request now journaled was asked (None: there is none)."""
    rows = await conn.execute_fetchall(
        "SELECT asked_at FROM erasures WHERE user_id = ?", (user_id,)
    )
    return next((float(row[0]) for row in rows), None)


@dataclass(frozen=True)
class ErasedBatch:
    """A batch of erased jobs (whose copies the broker drops) and their files: their
    pictures, and the uploads no job left reads."""

    job_ids: list[str]
    image_paths: list[str]
    input_paths: list[str]


async def count_batch(
    conn: aiosqlite.Connection, user_id: int, batch: ErasedBatch, posts: int
) -> None:
    """In the batch's transaction: its jobs, posts, pictures and uploads, erased with it (the
    rows counted, whether or not a stop comes before their files' delete), and the batch
    itself, until its files are deleted and its broker copies dropped (``batch_finished``; a
    stop before that leaves it to ``batch_left``)."""
    await conn.execute(
        "UPDATE erasures SET jobs = jobs + ?, posts = posts + ?, pictures = pictures + ?,"
        " uploads = uploads + ? WHERE user_id = ?",
        (len(batch.job_ids), posts, len(batch.image_paths), len(batch.input_paths), user_id),
    )
    await conn.executemany(
        "INSERT OR IGNORE INTO erasure_files (user_id, path, upload) VALUES (?, ?, ?)",
        [(user_id, path, False) for path in batch.image_paths]
        + [(user_id, path, True) for path in batch.input_paths],
    )
    await conn.executemany(
        "INSERT OR IGNORE INTO erasure_jobs (user_id, job_id) VALUES (?, ?)",
        [(user_id, job_id) for job_id in batch.job_ids],
    )


async def batch_left(conn: aiosqlite.Connection, user_id: int) -> ErasedBatch:
    """The request's batches whose files' delete or broker drop a stop interrupted (their
    rows counted already)."""
    jobs = await conn.execute_fetchall(
        "SELECT job_id FROM erasure_jobs WHERE user_id = ? ORDER BY job_id", (user_id,)
    )
    files = await conn.execute_fetchall(
        "SELECT path, upload FROM erasure_files WHERE user_id = ? ORDER BY path", (user_id,)
    )
    return ErasedBatch(
        [str(row[0]) for row in jobs],
        [str(path) for path, upload in files if not upload],
        [str(path) for path, upload in files if upload],
    )


async def batch_finished(
    conn: aiosqlite.Connection,
    user_id: int,
    batch: ErasedBatch,
    *,
    broker_left: bool,
    uploads_kept: int,
    pictures_kept: int,
) -> None:
    """``batch``'s files are deleted, but for ``uploads_kept`` uploads a job read since (left
    to it, so not counted as erased) and ``pictures_kept`` pictures its rows named outside the
    data folder's ``images/`` (not counted as erased either), and the broker was asked to drop
    its jobs' copies: whether it kept them."""
    async with transaction(conn):
        await conn.execute(
            "UPDATE erasures SET broker_copies_left = broker_copies_left OR ?,"
            " uploads = uploads - ?, pictures = pictures - ? WHERE user_id = ?",
            (broker_left, uploads_kept, pictures_kept, user_id),
        )
        await conn.execute(
            "DELETE FROM erasure_files WHERE user_id = ?"
            " AND path IN (SELECT value FROM json_each(?))",
            (user_id, json.dumps([*batch.image_paths, *batch.input_paths])),
        )
        await conn.execute(
            "DELETE FROM erasure_jobs WHERE user_id = ?"
            " AND job_id IN (SELECT value FROM json_each(?))",
            (user_id, json.dumps(batch.job_ids)),
        )


async def count_anonymised(conn: aiosqlite.Connection, user_id: int, rows: int) -> None:
    """In the transaction that anonymised them: ledger rows that lost the member's id."""
    await conn.execute(
        "UPDATE erasures SET ledger_rows_anonymised = ledger_rows_anonymised + ? WHERE user_id = ?",
        (rows, user_id),
    )


async def count_deferred(conn: aiosqlite.Connection, user_id: int, rows: int) -> None:
    """In the erase's last transaction: the ledger rows that keep the id until their quota
    periods end (all of them now, not added to an earlier run's)."""
    await conn.execute(
        "UPDATE erasures SET ledger_rows_deferred = ? WHERE user_id = ?", (rows, user_id)
    )


async def counts(conn: aiosqlite.Connection, user_id: int) -> ErasureCounts | None:
    rows = await conn.execute_fetchall(
        "SELECT jobs, pictures, uploads, posts, ledger_rows_anonymised, ledger_rows_deferred,"
        " broker_copies_left FROM erasures WHERE user_id = ?",
        (user_id,),
    )
    for jobs, pictures, uploads, posts, anonymised, deferred, broker_left in rows:
        return ErasureCounts(
            int(jobs),
            int(pictures),
            int(uploads),
            int(posts),
            int(anonymised),
            int(deferred),
            bool(broker_left),
        )
    return None


async def told(conn: aiosqlite.Connection, user_id: int, asked_at: float) -> bool:
    """The member was told the request of ``asked_at`` is done: it goes (not one asked again
    since, which its own run answers), marked carried out (``erasures_done``). Whether it
    went."""
    async with transaction(conn):
        cursor = await conn.execute(
            "DELETE FROM erasures WHERE user_id = ? AND asked_at = ?", (user_id, asked_at)
        )
        if cursor.rowcount == 0:
            return False
        await conn.execute(
            f"INSERT INTO erasures_done (user_id, asked_at) VALUES (?, ?) {_LATEST_DONE}",
            (user_id, asked_at),
        )
        await conn.execute("DELETE FROM erasure_files WHERE user_id = ?", (user_id,))
        await conn.execute("DELETE FROM erasure_jobs WHERE user_id = ?", (user_id,))
    return True


async def clear_expired_tokens(conn: aiosqlite.Connection, asked_before: float) -> int:
    """Blank the interaction tokens of the requests asked before ``asked_before`` (Discord no
    longer accepts them: their members are told by direct message); returns how many."""
    async with transaction(conn):
        cursor = await conn.execute(
            "UPDATE erasures SET application_id = NULL, interaction_token = NULL"
            " WHERE interaction_token IS NOT NULL AND asked_at < ?",
            (asked_before,),
        )
    return cursor.rowcount
