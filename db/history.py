"""A member's past jobs, read for /history and /show, and erased for /forget-me."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiosqlite

from db import jobs as jobs_journal
from db import presets, quotas, refusals
from db.database import outside_transactions, transaction


@dataclass(frozen=True)
class HistoryEntry:
    job_id: str
    kind: str
    status: str
    request_json: str
    created_at: float
    image_count: int
    withdrawn: bool  # a moderator deleted its result, or Easel withheld it: not shown again
    withheld: bool  # withdrawn by Easel: withheld at delivery, refunded (``withheld_why``)


@dataclass(frozen=True, order=True)
class PostedMessage:
    """One of Easel's posts of a job's pictures in a server (``job_messages``)."""

    channel_id: int
    message_id: int


@dataclass(frozen=True)
class ErasedData:
    """What /forget-me removed; ``image_paths`` and ``input_paths`` are files the caller still
    has to delete (``input_paths``: only those no remaining job reads). ``unfinished``: the
    member's queued or running jobs, when nothing was erased because of them."""

    jobs: int
    image_paths: list[str]
    input_paths: list[str]
    ledger_rows_anonymised: int
    ledger_rows_deferred: int
    unfinished: list[str]
    # The erased jobs, whose copies outside the database (a broker's) are the caller's too.
    job_ids: tuple[str, ...] = ()
    # Easel's posts of the erased jobs in servers, which the caller deletes from Discord.
    posts: tuple[PostedMessage, ...] = ()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def page_of_jobs(
    conn: aiosqlite.Connection,
    user_id: int,
    *,
    guild_id: int | None,
    search: str | None,
    limit: int,
    offset: int,
) -> tuple[list[HistoryEntry], int]:
    """One page of the member's jobs in the guild (None: direct messages), newest first, and
    how many match in all.

    ``search`` is a case-insensitive substring of the request (which holds the prompt).
    """
    pattern = f"%{_escape_like(search)}%" if search else "%"
    # IS rather than =: it also matches NULL, the guild of a direct message.
    where = (
        "user_id = ? AND guild_id IS ?"
        " AND json_extract(request_json, '$.prompt') LIKE ? ESCAPE '\\'"
    )
    async with conn.execute(
        f"SELECT COUNT(*) FROM jobs WHERE {where}", (user_id, guild_id, pattern)
    ) as cursor:
        row = await cursor.fetchone()
    total = int(row[0]) if row else 0
    async with conn.execute(
        "SELECT j.id, j.kind, j.status, j.request_json, j.created_at,"
        " (SELECT COUNT(*) FROM images i WHERE i.job_id = j.id), j.withdrawn_at IS NOT NULL,"
        " j.withheld_why IS NOT NULL"
        f" FROM jobs j WHERE {where} ORDER BY j.created_at DESC, j.id LIMIT ? OFFSET ?",
        (user_id, guild_id, pattern, limit, offset),
    ) as cursor:
        rows = await cursor.fetchall()
    entries = [
        HistoryEntry(
            job_id, kind, status, request, created_at, images, bool(withdrawn), bool(withheld)
        )
        for job_id, kind, status, request, created_at, images, withdrawn, withheld in rows
    ]
    return entries, total


async def withdraw_deleted_results(
    conn: aiosqlite.Connection,
    guild_id: int,
    channel_id: int,
    message_ids: Collection[int],
    now: float,
) -> list[str]:
    """Withdraw the jobs one of whose posts (``job_messages``) was one of ``message_ids``,
    deleted in ``channel_id`` of ``guild_id`` (where it was posted, so an id alone never
    matches), their upscales (the same pictures, larger), and every job made from them not
    yet delivered (a Vary, Zoom Out, pan or reroll queued or rendering: its result is not
    posted), theirs and so on; returns the jobs newly withdrawn."""
    if not message_ids:
        return []
    marks = ", ".join("?" * len(message_ids))
    posts = f"SELECT job_id FROM job_messages WHERE message_id IN ({marks})"
    deleted = f"{posts} AND guild_id = ? AND channel_id = ?"
    return await _withdraw_with_made_from(conn, deleted, (*message_ids, guild_id, channel_id), now)


async def withdraw_job(
    conn: aiosqlite.Connection, job_id: str, now: float, *, withheld_why: str | None = None
) -> list[str]:
    """Withdraw ``job_id`` of a server, whose public progress message an edit found deleted
    (maybe before it was recorded as its post), or whose result was withheld at delivery and
    refunded (``withheld_why``: what its maker was told; kept on it alone, in the same
    statement, so a delivery retried after a crash tells them the same), with the jobs
    ``withdraw_deleted_results`` withdraws with it; returns the jobs newly withdrawn."""
    return await _withdraw_with_made_from(
        conn,
        "SELECT id FROM jobs WHERE id = ? AND guild_id IS NOT NULL",
        (job_id,),
        now,
        withheld=None if withheld_why is None else (job_id, withheld_why),
    )


async def _withdraw_with_made_from(
    conn: aiosqlite.Connection,
    first: str,
    parameters: tuple[object, ...],
    now: float,
    *,
    withheld: tuple[str, str] | None = None,
) -> list[str]:
    """Withdraw the jobs ``first`` selects (one column: their ids, given ``parameters``),
    their upscales and the jobs made from them not yet delivered, theirs and so on;
    ``withheld``: (job id, why) of the one Easel withheld (the others: a moderator's)."""
    withheld_id, why = withheld or (None, None)
    rows = await conn.execute_fetchall(
        f"WITH RECURSIVE hit(id) AS ({first}"
        " UNION SELECT j.id FROM jobs j JOIN hit ON j.parent_job_id = hit.id"
        " WHERE j.kind = 'upscale' OR j.delivered_at IS NULL)"
        " UPDATE jobs SET withdrawn_at = ?, withheld_why = CASE id WHEN ? THEN ? END"
        " WHERE withdrawn_at IS NULL AND id IN (SELECT id FROM hit) RETURNING id",
        (*parameters, now, withheld_id, why),
    )
    return [str(row[0]) for row in rows]


async def restore_job(conn: aiosqlite.Connection, job_id: str, guild_id: int) -> bool:
    """Undo a withdrawal of ``job_id`` of ``guild_id`` (a moderator's or Easel's); whether it
    was withdrawn."""
    cursor = await conn.execute(
        "UPDATE jobs SET withdrawn_at = NULL, withheld_why = NULL"
        " WHERE id = ? AND guild_id = ? AND withdrawn_at IS NOT NULL",
        (job_id, guild_id),
    )
    return cursor.rowcount > 0


async def unlink_result_message(conn: aiosqlite.Connection, job_id: str, message_id: int) -> bool:
    """The job's post ``message_id`` is being deleted by its maker: its deletion is theirs,
    not a moderator's, so it withdraws nothing (the job's other posts still do). Whether it
    was linked."""
    cursor = await conn.execute(
        "DELETE FROM job_messages WHERE job_id = ? AND message_id = ?", (job_id, message_id)
    )
    return cursor.rowcount > 0


async def count_rows_of_user(conn: aiosqlite.Connection, user_id: int) -> int:
    """Jobs, images, settings, preset and refusal rows that still name the member (0 after
    /forget-me)."""
    async with conn.execute(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM images WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?))"
        " + (SELECT COUNT(*) FROM user_settings WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM presets WHERE scope = 'member' AND owner_id = ?)"
        " + (SELECT COUNT(*) FROM refusals WHERE user_id = ?)",
        (user_id, user_id, user_id, user_id, user_id),
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def erase_user(
    conn: aiosqlite.Connection, user_id: int, *, counted_since: float, anonymise_at: float
) -> ErasedData:
    """Delete the member's jobs, their images rows and posts (returned: ``ErasedData.posts``),
    settings, own presets and the refusals they were sent, and anonymise their quota ledger
    rows, atomically (``db.quotas.anonymise_user`` says which rows wait, and why).

    Nothing is erased while one of the member's jobs is queued or running: the queue still
    owns it (its upload, its reservation, the result it will post).
    """
    # The pictures other members' jobs read, before the write transaction (the slow part);
    # inside it, only the jobs added since are read again.
    mark, others_inputs = await jobs_journal.others_input_picture_paths(conn, user_id)
    async with transaction(conn):
        async with conn.execute(
            "SELECT id FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')"
            " ORDER BY created_at, rowid",
            (user_id,),
        ) as cursor:
            unfinished = [str(row[0]) for row in await cursor.fetchall()]
        if unfinished:
            return ErasedData(0, [], [], 0, 0, unfinished)
        async with conn.execute(
            "SELECT path FROM images WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?)",
            (user_id,),
        ) as cursor:
            image_paths = [str(row[0]) for row in await cursor.fetchall()]
        member_inputs = await jobs_journal.input_picture_paths(conn, user_id)
        posts = await _unlink_posts_of_member(conn, user_id)
        # images go with their job (ON DELETE CASCADE).
        deleted = await conn.execute_fetchall(
            "DELETE FROM jobs WHERE user_id = ? RETURNING id", (user_id,)
        )
        job_ids = tuple(str(row[0]) for row in deleted)
        # An upload another member's job still reads (their 🔄 or Remix of the member's job)
        # stays with that job; retention removes it once no job reads it.
        in_use = others_inputs | await jobs_journal.input_picture_paths_since(conn, mark)
        input_paths = sorted(member_inputs - in_use)
        await conn.execute("DELETE FROM user_settings WHERE user_id = ?", (user_id,))
        await presets.delete_member_presets(conn, user_id)
        await refusals.delete_member_refusals(conn, user_id)
        anonymised, deferred = await quotas.anonymise_user(
            conn, user_id, counted_since=counted_since, anonymise_at=anonymise_at
        )
    return ErasedData(
        len(job_ids), image_paths, input_paths, anonymised, deferred, [], job_ids, posts
    )


async def _unlink_posts_of_member(
    conn: aiosqlite.Connection, user_id: int
) -> tuple[PostedMessage, ...]:
    """Unlink (they would go with the jobs anyway) and return the posts of the member's jobs,
    by channel: their deletions, which Discord announces, then match no job. Each is left to
    delete (``pending_post_deletes``) until ``post_delete_settled``."""
    rows = await conn.execute_fetchall(
        "DELETE FROM job_messages WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?)"
        " RETURNING channel_id, message_id",
        (user_id,),
    )
    posts = tuple(sorted(PostedMessage(int(channel), int(message)) for channel, message in rows))
    await conn.executemany(
        "INSERT OR IGNORE INTO pending_post_deletes (channel_id, message_id) VALUES (?, ?)",
        [(post.channel_id, post.message_id) for post in posts],
    )
    return posts


async def pending_post_deletes(
    conn: aiosqlite.Connection, due_at: float
) -> tuple[PostedMessage, ...]:
    """The posts /forget-me erases still have to delete from Discord whose next try is due at
    ``due_at``, by channel."""
    rows = await conn.execute_fetchall(
        "SELECT channel_id, message_id FROM pending_post_deletes WHERE next_try_at <= ?"
        " ORDER BY channel_id, message_id",
        (due_at,),
    )
    return tuple(PostedMessage(int(channel), int(message)) for channel, message in rows)


async def post_delete_failed(
    conn: aiosqlite.Connection, message_id: int, retry_at: Callable[[int], float | None]
) -> float | None:
    """Discord refused or failed the delete of post ``message_id`` once more: it is tried again
    at ``retry_at(failures so far)``, or given up (its row deleted) when that is None. Returns
    when it is tried again (None: given up, or no longer pending)."""
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            "UPDATE pending_post_deletes SET failures = failures + 1 WHERE message_id = ?"
            " RETURNING failures",
            (message_id,),
        )
        if not rows:
            return None
        at = retry_at(int(next(iter(rows))[0]))
        if at is None:
            await conn.execute(
                "DELETE FROM pending_post_deletes WHERE message_id = ?", (message_id,)
            )
        else:
            await conn.execute(
                "UPDATE pending_post_deletes SET next_try_at = ? WHERE message_id = ?",
                (at, message_id),
            )
    return at


async def post_delete_settled(conn: aiosqlite.Connection, message_id: int) -> None:
    """The post ``message_id`` is deleted from Discord (or was already): not to delete again."""
    # Not inside another coroutine's transaction, whose rollback would undo it.
    async with outside_transactions(conn):
        await conn.execute("DELETE FROM pending_post_deletes WHERE message_id = ?", (message_id,))


async def prune_jobs(conn: aiosqlite.Connection, finished_before: float) -> int:
    """Delete the jobs that ended and were delivered before ``finished_before``, with their
    images rows; returns how many jobs. Their files are the caller's (``bot.jobs.retention``), and
    their ledger rows ``db.quotas.prune_settled``'s."""
    # images go with their job (ON DELETE CASCADE).
    cursor = await conn.execute(
        "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled')"
        " AND delivered_at IS NOT NULL AND finished_at < ?",
        (finished_before,),
    )
    return cursor.rowcount
