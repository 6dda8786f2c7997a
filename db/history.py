"""A member's past jobs, read for /history and /show, and erased for /forget-me."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import aiosqlite

from db import erasures, guild_settings, presets, quotas, refusals, run_mark
from db.database import outside_transactions, transaction, write
from db.jobs import StoppedBy


@dataclass(frozen=True)
class HistoryEntry:
    job_id: str
    kind: str
    status: str
    request_json: str
    created_at: float
    image_count: int
    withdrawn: bool  # a moderator deleted its result, or Easel withheld it: not shown again
    # Withdrawn by Easel: withheld at delivery, refunded; what its maker was told (None: not).
    withheld_why: str | None
    lost_in_a_restore: bool  # queued or running in a backup put back (``db.run_mark``)


@dataclass(frozen=True)
class Withdrawal:
    """What one withdrawal took, for its audit row."""

    job_ids: Sequence[str]
    unfinished: int  # of them, queued or running: stopped and refunded
    # Of them, finished jobs made from their pictures (V1-V4, Vary, --sref...).
    made_from_pictures: int = 0
    # Easel's other posts and copies by DM of them, left to delete (``pending_post_deletes``).
    posts_to_delete: int = 0
    # Older jobs of the server with their pixels, still standing (``standing_twins``).
    older_twins: Sequence[str] = ()
    # Of those and of ``job_ids``, the private ones (their maker's alone), read for the audit
    # row, which counts them, never names them (``private_among``).
    private: frozenset[str] = frozenset()


# The setting name of the audit row of a moderator's withdrawal by command or Cancel button
# (``bot.history``): it records the jobs it stops as the moderator's (``jobs.stopped_by``).
MODERATOR_WITHDRAWAL_AUDITED_AS = "jobs withdrawn by a moderator"


@dataclass(frozen=True)
class WithdrawalAudit:
    """The audit row of a moderator's withdrawal or of a result Easel withheld
    (``bot.history.WITHHELD_AUDITED_AS``), written in its transaction (a crash
    between them would lose the row: nothing replays it): by ``user_id`` (Easel: Discord does
    not say who deleted a post), under ``setting``, reading ``describe(what it took)``."""

    user_id: int
    setting: str
    describe: Callable[[Withdrawal], str]

    @property
    def moderators_own(self) -> bool:
        """A moderator's own act (their command, their Cancel), not a deletion, which Discord
        does not say who made, nor Easel's withholding: the unfinished jobs it takes are
        stopped by them (``journal.StoppedBy.MODERATOR``)."""
        return self.setting == MODERATOR_WITHDRAWAL_AUDITED_AS


@dataclass(frozen=True, order=True)
class PostedMessage:
    """One of Easel's posts of a job's pictures in a server (``job_messages``)."""

    channel_id: int
    message_id: int


@dataclass(frozen=True)
class ErasedData:
    """What this run of /forget-me removed (each batch's files and jobs were handed to
    ``erase_user``'s ``erased_batch`` as it went); its request's journal
    (``db.erasures.counts``) counts every run's."""

    jobs: int
    ledger_rows_anonymised: int
    ledger_rows_deferred: int
    # Easel's posts of the erased jobs in servers, which the caller deletes from Discord.
    posts: tuple[PostedMessage, ...] = ()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# A job ``j`` as ``HistoryEntry`` reads it (``_entries``).
_HISTORY_COLUMNS = (
    "j.id, j.kind, j.status, j.request_json, j.created_at,"
    " (SELECT COUNT(*) FROM images i WHERE i.job_id = j.id), j.withdrawn_at IS NOT NULL,"
    " j.withheld_why,"
    f" j.status = 'cancelled' AND j.error = '{run_mark.LOST_IN_A_RESTORE}'"
)


def _entries(rows: Iterable[sqlite3.Row]) -> list[HistoryEntry]:
    """Rows of ``_HISTORY_COLUMNS``, as entries."""
    return [
        HistoryEntry(
            job_id,
            kind,
            status,
            request,
            created_at,
            images,
            bool(withdrawn),
            withheld_why,
            bool(lost),
        )
        for job_id, kind, status, request, created_at, images, withdrawn, withheld_why, lost in rows
    ]


def _members_jobs(
    user_id: int, guild_id: int | None, search: str | None
) -> tuple[str, tuple[object, ...]]:
    """The WHERE clause and its values of the member's jobs in the guild (None: direct
    messages) whose prompt holds ``search`` (case-insensitive); with no search, no request is
    parsed (the ``jobs_member_server`` index alone)."""
    # IS rather than =: it also matches NULL, the guild of a direct message.
    where, values = "user_id = ? AND guild_id IS ?", (user_id, guild_id)
    if not search:
        return where, values
    matches = " AND json_extract(request_json, '$.prompt') LIKE ? ESCAPE '\\'"
    return where + matches, (*values, f"%{_escape_like(search)}%")


async def count_of_jobs(
    conn: aiosqlite.Connection, user_id: int, *, guild_id: int | None, search: str | None
) -> int:
    """How many of the member's jobs in the guild match ``search`` (``page_of_jobs``)."""
    where, values = _members_jobs(user_id, guild_id, search)
    async with conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", values) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class JobsAround:
    """Where a job stands among the member's jobs that ``count_of_jobs`` counts."""

    newer: int  # before it in ``page_of_jobs``'s order (newer, or as new with a smaller id)
    total: int


async def count_of_jobs_around(
    conn: aiosqlite.Connection,
    user_id: int,
    entry: HistoryEntry,
    *,
    guild_id: int | None,
    search: str | None,
) -> JobsAround:
    """``count_of_jobs``, and how many of those jobs come before ``entry`` (a page's first
    job), in the one read of the same rows: the page it begins, however many jobs were made
    since the page beside it was shown."""
    where, values = _members_jobs(user_id, guild_id, search)
    [(newer, total)] = await conn.execute_fetchall(
        "SELECT COUNT(*) FILTER (WHERE created_at > ? OR (created_at = ? AND id < ?)), COUNT(*)"
        f" FROM jobs WHERE {where}",
        (entry.created_at, entry.created_at, entry.job_id, *values),
    )
    return JobsAround(int(newer), int(total))


async def page_of_jobs(
    conn: aiosqlite.Connection,
    user_id: int,
    *,
    guild_id: int | None,
    search: str | None,
    limit: int,
    offset: int,
) -> list[HistoryEntry]:
    """One page of the member's jobs in the guild (None: direct messages), newest first.

    ``search`` is a case-insensitive substring of the request's prompt (None: every job).
    Each job skipped by ``offset`` is read: ``page_next_to`` reads only its page."""
    where, values = _members_jobs(user_id, guild_id, search)
    async with conn.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM jobs j WHERE {where}"
        " ORDER BY j.created_at DESC, j.id LIMIT ? OFFSET ?",
        (*values, limit, offset),
    ) as cursor:
        rows = await cursor.fetchall()
    return _entries(rows)


# The jobs next to an anchor job (its created_at twice, then its id) in ``page_of_jobs``'s
# order (newest first, ties by id): older ones after it, newer ones before it, read nearest
# first (in the reverse order). The bound on created_at lets ``jobs_member_server`` seek there.
_OLDER_THAN_ANCHOR = (
    " AND j.created_at <= ? AND (j.created_at < ? OR j.id > ?) ORDER BY j.created_at DESC, j.id"
)
_NEWER_THAN_ANCHOR = (
    " AND j.created_at >= ? AND (j.created_at > ? OR j.id < ?) ORDER BY j.created_at, j.id DESC"
)


async def page_next_to(
    conn: aiosqlite.Connection,
    user_id: int,
    anchor_id: str,
    *,
    older: bool,
    guild_id: int | None,
    search: str | None,
    limit: int,
) -> list[HistoryEntry] | None:
    """Up to ``limit`` of ``page_of_jobs``'s jobs right after the member's job ``anchor_id``
    (``older``) or right before it, in that order: a page read from its neighbour's last or
    first job (keyset), as fast at any depth. None: no such job of theirs (erased since)."""
    anchor = await conn.execute_fetchall(
        "SELECT created_at FROM jobs WHERE id = ? AND user_id = ?", (anchor_id, user_id)
    )
    if not anchor:
        return None
    [(created_at,)] = anchor
    where, values = _members_jobs(user_id, guild_id, search)
    rows = await conn.execute_fetchall(
        f"SELECT {_HISTORY_COLUMNS} FROM jobs j WHERE {where}"
        f"{_OLDER_THAN_ANCHOR if older else _NEWER_THAN_ANCHOR} LIMIT ?",
        (*values, created_at, created_at, anchor_id, limit),
    )
    entries = _entries(rows)
    return entries if older else entries[::-1]


# A member's jobs in a server that its moderators may read: not private (the member's alone).
_MEMBERS_PUBLIC_JOBS = "guild_id = ? AND user_id = ? AND NOT private"
_IN_CHANNELS = " AND channel_id IN (SELECT value FROM json_each(?))"


@dataclass(frozen=True)
class MemberJobsHere:
    """A member's jobs in a server, as its moderators count them: the public ones by the
    channel they were made in (None: not recorded), and how many are private."""

    public_by_channel: dict[int | None, int]
    private: int


async def member_jobs_here(
    conn: aiosqlite.Connection, guild_id: int, user_id: int
) -> MemberJobsHere:
    """How many jobs the member made in ``guild_id``, public by channel, and private."""
    rows = await conn.execute_fetchall(
        "SELECT channel_id, private, COUNT(*) FROM jobs WHERE guild_id = ? AND user_id = ?"
        " GROUP BY channel_id, private",
        (guild_id, user_id),
    )
    public: dict[int | None, int] = {}
    private = 0
    for channel_id, is_private, count in rows:
        if is_private:
            private += int(count)
        else:
            public[channel_id] = int(count)
    return MemberJobsHere(public, private)


async def page_of_public_jobs(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    channel_ids: Collection[int],
    *,
    limit: int,
    offset: int,
) -> list[HistoryEntry]:
    """One page of the member's public jobs in ``guild_id`` made in ``channel_ids``, newest
    first, as ``page_of_jobs`` reads them."""
    rows = await conn.execute_fetchall(
        f"SELECT {_HISTORY_COLUMNS} FROM jobs j WHERE {_MEMBERS_PUBLIC_JOBS}{_IN_CHANNELS}"
        " ORDER BY j.created_at DESC, j.id LIMIT ? OFFSET ?",
        (guild_id, user_id, json.dumps(sorted(channel_ids)), limit, offset),
    )
    return _entries(rows)


async def withdraw_public_jobs(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    channel_ids: Collection[int],
    now: float,
    audit: WithdrawalAudit,
) -> tuple[list[str], list[str]]:
    """A moderator withdraws the member's public jobs in ``guild_id`` made in
    ``channel_ids`` (those they moderate), with what a deletion of their posts withdraws with
    them (``_withdraw_with_made_from``) but the member's private jobs (seen by them alone: no
    moderator's business), audited as ``audit`` says; returns those newly withdrawn, and of
    them the member's public ones made in ``channel_ids`` (the others went with those). Their
    posts and copies by DM are left to delete, as a deletion's are."""
    asked = f"SELECT id FROM jobs WHERE {_MEMBERS_PUBLIC_JOBS}{_IN_CHANNELS}"
    parameters = (guild_id, user_id, json.dumps(sorted(channel_ids)))
    async with transaction(conn):
        withdrawn = await _withdraw_with_made_from(
            conn, asked, parameters, now, audit=audit, spared=user_id
        )
        rows = await conn.execute_fetchall(
            f"{asked} AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (*parameters, json.dumps(withdrawn)),
        )
    return withdrawn, [str(row[0]) for row in rows]


async def withdraw_deleted_results(
    conn: aiosqlite.Connection,
    guild_id: int,
    channel_id: int,
    message_ids: Collection[int],
    now: float,
    audit: WithdrawalAudit | None = None,
) -> list[str]:
    """Withdraw the jobs one of whose posts (``job_messages``) was one of ``message_ids``,
    deleted in ``channel_id`` of ``guild_id`` (where it was posted, so an id alone never
    matches), their upscales (the same pictures, larger), every job made from them not
    yet delivered (a Vary, Zoom Out, pan or reroll queued or rendering: its result is not
    posted), and the finished ones made from their pictures (``_withdraw_with_made_from``),
    theirs and so on; returns the jobs newly withdrawn, audited as ``audit`` says. The
    deleted posts are unlinked (those of jobs retention deleted too, ``pruned_posts``):
    /forget-me has nothing left to delete there; their other posts and copies by DM are left
    to delete."""
    if not message_ids:
        return []
    async with transaction(conn):
        return await _withdraw_deleted_posts(conn, guild_id, channel_id, message_ids, now, audit)


async def _withdraw_deleted_posts(
    conn: aiosqlite.Connection,
    guild_id: int,
    channel_id: int,
    message_ids: Collection[int],
    now: float,
    audit: WithdrawalAudit | None,
) -> list[str]:
    """``withdraw_deleted_results``'s writes, in the caller's transaction."""
    marks = ", ".join("?" * len(message_ids))
    # Gone already: a delete a withdrawal left of one (a moderator deleting it before the
    # sweep did) is not asked of Discord again.
    for table in ("pending_post_deletes", "pruned_posts"):
        await conn.execute(
            f"DELETE FROM {table} WHERE message_id IN ({marks}) AND channel_id = ?",
            (*message_ids, channel_id),
        )
    deleted = f"message_id IN ({marks}) AND guild_id = ? AND channel_id = ?"
    return await _withdraw_posted(conn, deleted, (*message_ids, guild_id, channel_id), now, audit)


async def withdraw_channel_results(
    conn: aiosqlite.Connection,
    guild_id: int,
    channel_id: int,
    now: float,
    audit: WithdrawalAudit | None = None,
) -> list[str]:
    """Withdraw the jobs one of whose posts was in ``channel_id`` of ``guild_id``, a channel
    or thread deleted (its messages with it, which Discord announces one by one to no one),
    or in one of its threads (archived ones too, which Discord announces not at all), and
    those made there not yet delivered (queued, rendering, or posted nowhere yet), with the
    jobs ``withdraw_deleted_results`` withdraws with them, but not their pixels' twins (a
    member may hold Manage Channels in one channel only, and bots delete temporary channels):
    unlinks those posts, and records the channel for ``forget_posts_of_deleted_channels``,
    the caller's to run after stopping those jobs; returns the jobs newly withdrawn."""
    # Each half read by its index: "guild_id = ? AND (channel_id = ? OR parent_id = ?)" was
    # read by the guild alone under a one-server database's sampled statistics
    # (``ANALYSIS_LIMIT``): every post of the server, 0.7 s of the transaction at 300,000.
    there = (
        "message_id IN (SELECT message_id FROM job_messages WHERE guild_id = ? AND channel_id = ?"
        " UNION ALL SELECT message_id FROM job_messages WHERE guild_id = ? AND parent_id = ?)"
    )
    async with transaction(conn):
        # Its messages went with it (a thread's are not known here: each answers "gone").
        await conn.execute("DELETE FROM pending_post_deletes WHERE channel_id = ?", (channel_id,))
        # Its kept posts name no job: left to batches after this transaction (a channel's of
        # months are 37,500 rows, a second in one statement), recorded so that a stop between
        # leaves them to the next retention round, not to a /forget-me's deletes.
        await conn.execute(
            "INSERT OR IGNORE INTO deleted_channels_kept_posts (channel_id) VALUES (?)",
            (channel_id,),
        )
        withdrawn = await _withdraw_posted(
            conn,
            there,
            (guild_id, channel_id, guild_id, channel_id),
            now,
            audit,
            channel=(guild_id, channel_id),
        )
    return withdrawn


async def forget_posts_of_deleted_channels(conn: aiosqlite.Connection) -> int:
    """The kept posts of pruned jobs (``pruned_posts``) in the channels and threads a
    withdrawal recorded deleted (``deleted_channels_kept_posts``), or in their threads,
    deleted ``PRUNED_POSTS_BATCH`` a transaction, so that other commands run between; each
    channel's record goes with its last batch. How many went. Run after each channel's
    withdrawal, and by each retention round for what a stop or a failure left."""
    channels = await conn.execute_fetchall("SELECT channel_id FROM deleted_channels_kept_posts")
    gone = 0
    for (channel_id,) in channels:
        batch = PRUNED_POSTS_BATCH
        while batch == PRUNED_POSTS_BATCH:
            async with transaction(conn):
                cursor = await conn.execute(
                    "DELETE FROM pruned_posts WHERE message_id IN (SELECT message_id"
                    " FROM pruned_posts WHERE channel_id = ?1 OR parent_id = ?1 LIMIT ?2)",
                    (channel_id, PRUNED_POSTS_BATCH),
                )
                batch = cursor.rowcount
                if batch < PRUNED_POSTS_BATCH:
                    await conn.execute(
                        "DELETE FROM deleted_channels_kept_posts WHERE channel_id = ?",
                        (channel_id,),
                    )
            gone += batch
    return gone


async def _withdraw_posted(
    conn: aiosqlite.Connection,
    posted: str,
    where: tuple[object, ...],
    now: float,
    audit: WithdrawalAudit | None,
    *,
    channel: tuple[int, int] | None = None,
) -> list[str]:
    """Withdraw the jobs of the deleted posts (``job_messages``) ``posted`` selects (given
    ``where``), with what ``_withdraw_with_made_from`` withdraws with them, and unlink those
    posts. A deleted ``channel`` (guild, channel): also the jobs made there not yet
    delivered, and no twin, now or later (``withdrawn_with_channel``: neither the delivery
    gate nor a tombstone reads their pixels). In the caller's transaction."""
    # Unlinked first: the deleted posts are not among those left to delete.
    rows = await conn.execute_fetchall(
        f"DELETE FROM job_messages WHERE {posted} RETURNING job_id", where
    )
    jobs = "SELECT value FROM json_each(?)"
    parameters: tuple[object, ...] = (json.dumps(sorted({str(row[0]) for row in rows})),)
    if channel is not None:
        jobs += " UNION SELECT id FROM jobs WHERE guild_id = ? AND channel_id = ?"
        jobs += " AND delivered_at IS NULL"
        parameters = (*parameters, *channel)
    return await _withdraw_with_made_from(
        conn, jobs, parameters, now, twins=channel is None, audit=audit
    )


async def withdraw_job(
    conn: aiosqlite.Connection,
    job_id: str,
    now: float,
    *,
    withheld_why: str | None = None,
    audit: WithdrawalAudit | None = None,
) -> list[str]:
    """Withdraw ``job_id`` of a server, whose public progress message an edit found deleted
    (maybe before it was recorded as its post), or whose result was withheld at delivery and
    refunded (``withheld_why``: what its maker was told; kept on it alone, in the same
    statement, so a delivery retried after a crash tells them the same; a job in direct
    messages too, since Easel withholds there by the operator's banned words), with the jobs
    ``withdraw_deleted_results`` withdraws with it; returns the jobs newly withdrawn. One
    already withdrawn with its deleted channel (its message went with it) reaches no twin."""
    async with transaction(conn):
        return await _withdraw_job(conn, job_id, now, withheld_why, audit)


async def withdraw_job_of_deleted_post(
    conn: aiosqlite.Connection,
    job_id: str,
    deleted: tuple[int, int, int] | None,
    now: float,
    audit: WithdrawalAudit | None = None,
) -> list[str]:
    """``withdraw_job`` after ``withdraw_deleted_results`` for its deleted progress message
    ``deleted`` (guild, channel, message id; None: not known), in one transaction: a crash
    between them would leave its post unlinked and it not withdrawn, or the reverse. Returns
    the jobs newly withdrawn, those of the deleted post first."""
    async with transaction(conn):
        heard = (
            []
            if deleted is None
            else await _withdraw_deleted_posts(
                conn, deleted[0], deleted[1], [deleted[2]], now, audit
            )
        )
        return heard + await _withdraw_job(conn, job_id, now, None, audit)


async def _withdraw_job(
    conn: aiosqlite.Connection,
    job_id: str,
    now: float,
    withheld_why: str | None,
    audit: WithdrawalAudit | None,
) -> list[str]:
    """``withdraw_job``'s writes, in the caller's transaction."""
    with_channel = await conn.execute_fetchall(
        "SELECT 1 FROM jobs WHERE id = ? AND withdrawn_with_channel", (job_id,)
    )
    # Easel withholds in direct messages too (the operator's banned words); a moderator or
    # member withdraws only in a server.
    in_a_server = "" if withheld_why is not None else " AND guild_id IS NOT NULL"
    return await _withdraw_with_made_from(
        conn,
        "SELECT id FROM jobs WHERE id = ?" + in_a_server,
        (job_id,),
        now,
        withheld=None if withheld_why is None else (job_id, withheld_why),
        twins=not with_channel,
        audit=audit,
    )


async def _withdraw_with_made_from(
    conn: aiosqlite.Connection,
    first: str,
    parameters: tuple[object, ...],
    now: float,
    *,
    withheld: tuple[str, str] | None = None,
    twins: bool = True,
    audit: WithdrawalAudit | None = None,
    spared: int | None = None,
) -> list[str]:
    """Withdraw the jobs ``first`` selects (one column: their ids, given ``parameters``),
    their upscales and the jobs made from them not yet delivered, theirs and so on; for a
    moderator's withdrawal (``twins``), also the finished jobs made from their pictures
    (``_MADE_FROM_ITS_PICTURES``), and the jobs of the same server made after one of
    them with one of its pictures' pixels (the same picture made again or pasted into
    /use-settings to evade it), and what goes with those; never an older one (a member
    could otherwise copy another's picture into a channel they moderate and delete it
    there); and their posts still linked and copies by DM are unlinked and left to delete
    (``pending_post_deletes``). ``withheld``: (job id, why) of the one Easel withheld (the
    others: a moderator's), whose pixels stay usable elsewhere (its rule was its channel's
    or its texts', not its pictures'), and which was posted nowhere. ``audit``: the row
    written when some job was withdrawn (all of one server), in the caller's
    transaction. ``spared``: a member whose private jobs are never reached (nor through
    them what is made from them)."""
    withheld_id, why = withheld or (None, None)
    moderators = twins and withheld is None
    made_from = "j.kind = 'upscale' OR j.delivered_at IS NULL"
    carried = _Carried(
        f"{made_from} OR {_MADE_FROM_ITS_PICTURES}" if moderators else made_from,
        (),
        "TRUE" if moderators else None,
    )
    if spared is not None:
        carried = _sparing(carried, spared)
    hit = await _reached(conn, first, parameters, carried)
    # A moderator's own withdrawal stops those unfinished as theirs, unless stopped before
    # (a member's cancel whose end is not written yet: that stop came first).
    stopper = StoppedBy.MODERATOR if audit is not None and audit.moderators_own else None
    rows = await conn.execute_fetchall(
        "UPDATE jobs SET withdrawn_at = ?, withheld_why = CASE id WHEN ? THEN ? END,"
        " withdrawn_with_channel = ?, stopped_by = CASE WHEN status IN ('queued', 'running')"
        " THEN COALESCE(stopped_by, ?) ELSE stopped_by END"
        " WHERE withdrawn_at IS NULL AND id IN (SELECT value FROM json_each(?))"
        " RETURNING id, guild_id, status IN ('queued', 'running')",
        (now, withheld_id, why, not twins, stopper, json.dumps(hit)),
    )
    withdrawn = [str(row[0]) for row in rows]
    guild_id = next((row[1] for row in rows if row[1] is not None), None)
    taken = Withdrawal(withdrawn, sum(1 for row in rows if row[2]))
    if moderators and withdrawn:
        taken = await _posts_and_kin_of(conn, taken)
    if audit is not None and guild_id is not None:
        private = await private_among(conn, [*taken.job_ids, *taken.older_twins])
        description = audit.describe(replace(taken, private=private))
        await guild_settings.record_change(
            conn, guild_id, audit.user_id, audit.setting, description, now
        )
    return withdrawn


async def private_among(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> frozenset[str]:
    """Which of ``job_ids`` are private (their maker's alone): an audit row or an admin's
    answer counts them, never names them, as /easel-mod does."""
    rows = await conn.execute_fetchall(
        "SELECT id FROM jobs WHERE private AND id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(job_ids)),),
    )
    return frozenset(str(row[0]) for row in rows)


# A job ``j`` that reads a picture (``job_inputs``).
_READS_A_PICTURE = "EXISTS (SELECT 1 FROM job_inputs WHERE job_inputs.job_id = j.id)"
# A finished job ``j`` made from the pictures of a withdrawn job ``hit`` (``_reached``'s walk):
# it reads a picture (one of them, or an upload of their pixels, which is how it was linked to
# its parent), and is not a 🔄 or Remix of a job that read none of a withdrawn job's (linked to
# it for the prompt: any picture it reads is its parent's input, not its parent's picture); a 🔄
# or Remix of one that did (of a V1: ``hit.by_picture``) reads that picture again.
_MADE_FROM_ITS_PICTURES = (
    f"({_READS_A_PICTURE} AND (j.kind NOT IN ('reroll', 'remix') OR hit.by_picture))"
)


async def _posts_and_kin_of(conn: aiosqlite.Connection, taken: Withdrawal) -> Withdrawal:
    """A moderator's withdrawal ``taken``: its delivered jobs' posts still linked and all its
    jobs' copies by DM, unlinked and left to delete (an undelivered one's progress message is
    its delivery's to end, saying it is not posted); with how many of them, how many of its jobs
    are finished ones made from the others' pictures, and the older jobs with their pixels
    still standing. In the caller's transaction."""
    batch = json.dumps(list(taken.job_ids))
    rows = await conn.execute_fetchall(
        "SELECT json_group_array(id) FROM jobs"
        " WHERE id IN (SELECT value FROM json_each(?)) AND delivered_at IS NOT NULL",
        (batch,),
    )
    delivered = str(next(iter(rows))[0])
    posts = await _unlink_posts(conn, delivered, "job_messages")
    # Every job's: a copy by DM is never a delivery's progress message (results by DM send it
    # before the delivery is marked).
    copies = await _unlink_posts(conn, batch, "job_copies")
    rows = await conn.execute_fetchall(
        "SELECT COUNT(*) FROM jobs j WHERE j.id IN (SELECT value FROM json_each(:batch))"
        " AND j.delivered_at IS NOT NULL AND j.kind <> 'upscale'"
        " AND j.parent_job_id IN (SELECT value FROM json_each(:batch))"
        f" AND {_READS_A_PICTURE}",
        {"batch": batch},
    )
    return replace(
        taken,
        made_from_pictures=int(next(iter(rows))[0]),
        posts_to_delete=len(posts) + len(copies),
        older_twins=await standing_twins(conn, taken.job_ids),
    )


async def standing_twins(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> list[str]:
    """The jobs of the same server, not withdrawn, one of whose pictures has the pixels of
    one of ``job_ids``' (withdrawn by a moderator: so older ones, which a withdrawal never
    reaches), oldest first."""
    rows = await conn.execute_fetchall(
        # Each picture once: not each withdrawn copy joined with every other copy.
        "WITH held AS MATERIALIZED (SELECT DISTINCT mine.pixel_digest, made.guild_id"
        " FROM images mine JOIN jobs made ON made.id = mine.job_id"
        " WHERE mine.job_id IN (SELECT value FROM json_each(?))"
        " AND mine.pixel_digest IS NOT NULL)"
        " SELECT twin.id FROM held"
        " JOIN images same ON same.pixel_digest = held.pixel_digest"
        " JOIN jobs twin ON twin.id = same.job_id AND twin.guild_id = held.guild_id"
        " WHERE twin.withdrawn_at IS NULL"
        " GROUP BY twin.id ORDER BY MIN(twin.created_at), twin.id",
        (json.dumps(list(job_ids)),),
    )
    return [str(row[0]) for row in rows]


@dataclass(frozen=True)
class _Carried:
    """What goes with a withdrawn job (or comes back with a restored one): the jobs made from
    it meeting ``made_from`` (a condition on the made job ``j``, given its parameters) and,
    unless ``twins`` is None, the jobs of its server made after it with one of its pictures'
    pixels meeting ``twins`` (a condition on the ``twin`` job); theirs and so on."""

    made_from: str
    made_from_parameters: tuple[object, ...]
    twins: str | None
    twins_parameters: tuple[object, ...] = ()


async def _reached(
    conn: aiosqlite.Connection, first: str, parameters: tuple[object, ...], carried: _Carried
) -> list[str]:
    """The jobs ``first`` selects (one column: their ids, given ``parameters``) with all those
    ``carried`` takes along, sorted; in the caller's transaction. Twins are found by picture,
    not by job, one pass per round of jobs newly reached: a picture (of a server) is asked
    only for the jobs made after the earliest reached job holding it and not after the one
    it was asked for before (joining every job with a picture once per job reached with it
    took 12 s for 3,000 copies of one picture); and a round's walk of the jobs made from
    others stops at the jobs reached before (1.8 s when each of 1,000 rounds walked again
    the chain of jobs made from others reached so far). So the jobs taken along grow with the
    jobs reached, not with the rounds times them; but a picture held by an earlier reached job
    round after round is looked up again each round, its images scanned by digest (the window
    on ``created_at`` is checked row by row): rounds times its holders, in a contrived chain."""
    for statement in _REACH_TABLES:
        await conn.execute(statement)
    reached: list[str] = []
    seed, seed_parameters = first, parameters
    while True:
        rows = await conn.execute_fetchall(
            # ``by_picture``: made from a reached job's pictures (``_MADE_FROM_ITS_PICTURES``);
            # never a seed (the jobs asked for, their twins).
            "INSERT INTO temp.reached_jobs (id)"
            f" WITH RECURSIVE hit(id, by_picture) AS (SELECT *, FALSE FROM ({seed})"
            f" UNION SELECT j.id, {_MADE_FROM_ITS_PICTURES} FROM jobs j"
            " JOIN hit ON j.parent_job_id = hit.id"
            f" WHERE ({carried.made_from}) AND j.id NOT IN (SELECT id FROM temp.reached_jobs))"
            " SELECT DISTINCT id FROM hit WHERE id NOT IN (SELECT id FROM temp.reached_jobs)"
            " RETURNING id",
            (*seed_parameters, *carried.made_from_parameters),
        )
        new = [str(row[0]) for row in rows]
        reached += new
        if carried.twins is None or not new:
            break
        # Each picture of a server: ``since``, the earliest reached job holding it; ``asked``,
        # the ``since`` its twins were asked for before (none: never asked).
        rows = await conn.execute_fetchall(
            "INSERT INTO temp.reached_pictures (pixel_digest, guild_id, since)"
            " SELECT picture.pixel_digest, mine.guild_id, MIN(mine.created_at)"
            " FROM jobs mine JOIN images picture ON picture.job_id = mine.id"
            " WHERE mine.id IN (SELECT value FROM json_each(?))"
            " AND picture.pixel_digest IS NOT NULL AND mine.guild_id IS NOT NULL"
            " GROUP BY picture.pixel_digest, mine.guild_id"
            " ON CONFLICT DO UPDATE SET asked = since, since = excluded.since"
            " WHERE excluded.since < since RETURNING rowid",
            (json.dumps(new),),
        )
        if not rows:
            break
        seed = (
            "SELECT twin.id FROM temp.reached_pictures held"
            " JOIN images same ON same.pixel_digest = held.pixel_digest"
            " JOIN jobs twin ON twin.id = same.job_id AND twin.guild_id = held.guild_id"
            " AND twin.created_at > held.since"
            " AND (held.asked IS NULL OR twin.created_at <= held.asked)"
            f" WHERE held.rowid IN (SELECT value FROM json_each(?)) AND ({carried.twins})"
        )
        seed_parameters = (json.dumps([row[0] for row in rows]), *carried.twins_parameters)
    for statement in _REACH_TABLES_EMPTIED:
        await conn.execute(statement)
    return sorted(reached)


def _sparing(carried: _Carried, user_id: int) -> _Carried:
    """``carried``, never reaching a private job of ``user_id``'s."""
    not_theirs = "NOT ({0}.private AND {0}.user_id = ?)"
    return _Carried(
        f"({carried.made_from}) AND {not_theirs.format('j')}",
        (*carried.made_from_parameters, user_id),
        None if carried.twins is None else f"({carried.twins}) AND {not_theirs.format('twin')}",
        (*carried.twins_parameters, user_id),
    )


# ``_reached``'s state, this connection's alone (gone when a transaction creating them is
# rolled back, hence created each time when missing); emptied after each use.
_REACH_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS reached_jobs (id TEXT PRIMARY KEY NOT NULL)",
    "CREATE TEMP TABLE IF NOT EXISTS reached_pictures (pixel_digest BLOB NOT NULL,"
    " guild_id INTEGER NOT NULL, since REAL, asked REAL, PRIMARY KEY (pixel_digest, guild_id))",
)
_REACH_TABLES_EMPTIED = ("DELETE FROM temp.reached_jobs", "DELETE FROM temp.reached_pictures")


async def restore_job(
    conn: aiosqlite.Connection,
    job_id: str,
    guild_id: int,
    *,
    admin_id: int,
    now: float,
    describe: Callable[[Sequence[str], frozenset[str]], str],
) -> list[str]:
    """Undo a withdrawal of ``job_id`` of ``guild_id`` (a moderator's or Easel's) and of the
    jobs withdrawn at the same moment because of it (``_withdraw_with_made_from`` writes one
    time; ``insert_job`` copies it): made from it, or after it with its pixels (a moderator's
    withdrawal's twin), theirs and so on; and the server's tombstones of those pixels written
    then (an erased twin's, ``withdrawn_pictures``), which would still refuse them. One
    withdrawn at another moment stays withdrawn; one withdrawn in the same bulk delete (one
    moment) comes back. Audited in the same transaction (a crash between them would lose the
    row) as by ``admin_id``, reading ``describe(jobs restored, the private ones among them)``
    (``private_among``). Returns the jobs restored,
    ``job_id`` first (none: it was not withdrawn)."""
    async with transaction(conn):
        at_rows = await conn.execute_fetchall(
            "SELECT withdrawn_at FROM jobs WHERE id = ? AND guild_id = ?"
            " AND withdrawn_at IS NOT NULL",
            (job_id, guild_id),
        )
        if not at_rows:
            return []
        at = next(iter(at_rows))[0]
        carried = _Carried(
            "j.withdrawn_at = ? AND j.guild_id = ?",
            (at, guild_id),
            "twin.withdrawn_at = ? AND twin.withheld_why IS NULL",
            (at,),
        )
        hit = await _reached(conn, "SELECT ?", (job_id,), carried)
        rows = await conn.execute_fetchall(
            "UPDATE jobs SET withdrawn_at = NULL, withheld_why = NULL, withdrawn_with_channel = 0"
            " WHERE id IN (SELECT value FROM json_each(?)) RETURNING id",
            (json.dumps(hit),),
        )
        restored = [str(row[0]) for row in rows]
        marks = ", ".join("?" * len(restored))
        await conn.execute(
            "DELETE FROM withdrawn_pictures WHERE guild_id = ? AND withdrawn_at = ?"
            f" AND pixel_digest IN (SELECT pixel_digest FROM images WHERE job_id IN ({marks})"
            f" UNION SELECT pixel_digest FROM posted_grids WHERE job_id IN ({marks}))",
            (guild_id, at, *restored, *restored),
        )
        restored.sort(key=lambda restored_id: restored_id != job_id)
        description = describe(restored, await private_among(conn, restored))
        await guild_settings.record_change(conn, guild_id, admin_id, "restore", description, now)
    return restored


async def is_job_post(
    conn: aiosqlite.Connection, job_id: str, posted_in: tuple[int, int], message_id: int
) -> bool:
    """Whether ``message_id``, in ``posted_in`` (guild, channel), is one of ``job_id``'s posts
    (``job_messages``)."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM job_messages WHERE message_id = ? AND job_id = ? AND guild_id = ?"
        " AND channel_id = ?",
        (message_id, job_id, *posted_in),
    )
    return bool(rows)


async def posts_of(conn: aiosqlite.Connection, job_id: str) -> tuple[PostedMessage, ...]:
    """The job's posts still linked (``job_messages``: its result, the progress message that
    became it or points to it, its /show and U1-U4 posts), the ones whose deletion withdraws
    it, by channel."""
    rows = await conn.execute_fetchall(
        "SELECT channel_id, message_id FROM job_messages WHERE job_id = ?"
        " ORDER BY channel_id, message_id",
        (job_id,),
    )
    return tuple(PostedMessage(int(channel), int(message)) for channel, message in rows)


async def record_copy(conn: aiosqlite.Connection, job_id: str, post: PostedMessage) -> bool:
    """Easel sent a copy of ``job_id``'s pictures as ``post`` in a member's direct messages
    (DM me, results by DM): a moderator's withdrawal of the job leaves it to delete. Whether
    the job still stands: withdrawn or erased meanwhile, the copy is left to delete now
    (``pending_post_deletes``) until ``post_delete_settled``."""
    async with transaction(conn):
        await conn.execute(
            "INSERT OR IGNORE INTO job_copies (message_id, job_id, channel_id)"
            " SELECT ?, id, ? FROM jobs WHERE id = ? AND withdrawn_at IS NULL",
            (post.message_id, post.channel_id, job_id),
        )
        # Also one recorded before (a delivery repeated after a restart shows its first copy).
        if await conn.execute_fetchall(
            "SELECT 1 FROM job_copies WHERE message_id = ? AND job_id = ?",
            (post.message_id, job_id),
        ):
            return True
        await conn.execute(
            "INSERT OR IGNORE INTO pending_post_deletes (channel_id, message_id) VALUES (?, ?)",
            (post.channel_id, post.message_id),
        )
    return False


async def copy_deleted(conn: aiosqlite.Connection, message_id: int) -> None:
    """Easel's copy by DM ``message_id`` is deleted (its member's Delete): no withdrawal of
    its job, nor its maker's /forget-me once retention deleted the job, deletes it again."""
    async with transaction(conn):
        for table in ("job_copies", "pruned_posts", "pending_post_deletes"):
            await conn.execute(f"DELETE FROM {table} WHERE message_id = ?", (message_id,))


async def forget_copies_in(conn: aiosqlite.Connection, channel_id: int) -> None:
    """The records of Easel's copies by DM sent in ``channel_id``, a member's direct messages
    (their /forget-me: nothing kept says what they asked for), also of jobs retention deleted
    (``pruned_posts``). The copies stay, theirs to delete; neither a withdrawal nor the
    maker's /forget-me deletes them any more. ``job_copies`` is read by a scan (no index on
    the channel: /forget-me is rare, the table small)."""
    async with transaction(conn):
        for table in ("job_copies", "pruned_posts"):
            await conn.execute(f"DELETE FROM {table} WHERE channel_id = ?", (channel_id,))


async def unlinked_if_withdrawn(
    conn: aiosqlite.Connection, job_id: str, post: PostedMessage
) -> bool:
    """``post`` of ``job_id``, recorded after a moderator withdrew the job (a /show or U1
    racing their Delete): unlinked and left to delete (``pending_post_deletes``), as the
    withdrawal would have taken it. Whether it was."""
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            "DELETE FROM job_messages WHERE message_id = ? AND job_id IN"
            " (SELECT id FROM jobs WHERE id = ? AND withdrawn_at IS NOT NULL) RETURNING 1",
            (post.message_id, job_id),
        )
        if rows:
            await conn.execute(
                "INSERT OR IGNORE INTO pending_post_deletes (channel_id, message_id) VALUES (?, ?)",
                (post.channel_id, post.message_id),
            )
    return bool(rows)


async def unlink_result_message(conn: aiosqlite.Connection, job_id: str, message_id: int) -> bool:
    """The job's post ``message_id`` is being deleted by its maker: its deletion is theirs,
    not a moderator's, so it withdraws nothing (the job's other posts still do). Whether it
    was linked."""
    cursor = await write(
        conn, "DELETE FROM job_messages WHERE job_id = ? AND message_id = ?", (job_id, message_id)
    )
    return cursor.rowcount > 0


async def count_rows_of_user(conn: aiosqlite.Connection, user_id: int) -> int:
    """Jobs, images, settings, preset, refusal and kept post rows (``pruned_posts``) that
    still name the member (0 after
    /forget-me). Only the tests call it, to prove that erase; its SQL lives here, with the
    erase's."""
    async with conn.execute(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM images WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?))"
        " + (SELECT COUNT(*) FROM user_settings WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM presets WHERE scope = 'member' AND owner_id = ?)"
        " + (SELECT COUNT(*) FROM refusals WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM pruned_posts WHERE user_id = ?)",
        (user_id, user_id, user_id, user_id, user_id, user_id),
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _keep_withdrawn_pictures(
    conn: aiosqlite.Connection, condition: str, parameters: tuple[object, ...]
) -> None:
    """Before the jobs ``condition`` selects are deleted: the pixels of those a moderator
    withdrew (not with their deleted channel: ``_withdraw_posted``), kept by server
    (``withdrawn_pictures``), so that a saved copy stays refused there
    (``db.jobs.erased_picture_withdrawn``) and the same picture made again is withheld
    (``db.jobs.pixels_withdrawn``); no member, prompt or job is named."""
    withdrawn = (
        f"{condition} AND jobs.guild_id IS NOT NULL"
        " AND jobs.withdrawn_at IS NOT NULL AND jobs.withheld_why IS NULL"
        " AND NOT jobs.withdrawn_with_channel"
    )
    await conn.execute(
        "INSERT OR IGNORE INTO withdrawn_pictures (guild_id, pixel_digest, withdrawn_at)"
        " SELECT jobs.guild_id, images.pixel_digest, jobs.withdrawn_at"
        f" FROM jobs JOIN images ON images.job_id = jobs.id WHERE {withdrawn}"
        " AND images.pixel_digest IS NOT NULL"
        " UNION SELECT jobs.guild_id, posted_grids.pixel_digest, jobs.withdrawn_at"
        f" FROM jobs JOIN posted_grids ON posted_grids.job_id = jobs.id WHERE {withdrawn}",
        parameters * 2,
    )


# /forget-me erases this many jobs, or anonymises this many ledger rows, a transaction (each
# some 10-20 ms on a busy 2-core machine): other members' commands on the shared connection
# wait for one batch, not for all of a member's rows (one 1.4 s transaction at 20,000 jobs).
ERASE_BATCH = 200
ANONYMISE_BATCH = 1_000
PRUNED_POSTS_BATCH = 1_000


@dataclass(frozen=True)
class ErasedJobs:
    """One batch of /forget-me: its jobs, their pictures' files and the uploads no job left
    reads, for the caller to delete before the next batch."""

    job_ids: tuple[str, ...]
    image_paths: list[str]
    input_paths: list[str]
    posts: tuple[PostedMessage, ...]


async def erase_user(
    conn: aiosqlite.Connection,
    user_id: int,
    *,
    asked_at: float,
    counted_since: float,
    anonymise_at: float,
    erased_batch: Callable[[ErasedJobs], Awaitable[None]] | None = None,
    saved_up_to: float | None = None,
) -> ErasedData:
    """Delete the member's jobs made up to ``asked_at`` with their images rows and posts, and
    the posts retention kept of those it deleted (``pruned_posts``), all returned
    (``ErasedData.posts``); anonymise their quota ledger rows
    (``db.quotas.anonymise_user`` says which rows wait, and why), then delete their settings,
    own presets and the refusals they were sent. Each step of many rows goes in short
    transactions (``ERASE_BATCH``, ``ANONYMISE_BATCH``), each counted in the request's journal
    (``db.erasures``, written by ``db.erasures.ask`` first); a batch of jobs is handed to
    ``erased_batch`` before the next. A stop between batches leaves whole jobs (never one
    without its pictures, posts or uploads) that a rerun, or the next start, erases. The
    pixels of their jobs a moderator withdrew stay, naming no one (``withdrawn_pictures``).

    Only the jobs made up to ``asked_at`` that have ended are erased (``db.erasures.ask`` found
    none queued or running): one the member starts during the erase, or after a stop and
    before the next start finishes it, keeps its rows and its ledger rows, together (a later
    /forget-me erases them); settings, presets and refusals go last, whenever written, so that
    none is left when the member is told; or, with ``saved_up_to`` (a start erasing again what
    a database put back held), only those dated up to it, whatever the clocks did since.
    """
    async with outside_transactions(conn):
        rows = await conn.execute_fetchall(
            # Also a job that ended in a moderator's withdrawal, or Easel's withholding.
            "SELECT id FROM jobs WHERE user_id = ? AND created_at <= ?"
            " AND status NOT IN ('queued', 'running') ORDER BY created_at, rowid",
            (user_id, asked_at),
        )
    ended = [str(row[0]) for row in rows]
    erased_jobs = 0
    posts: list[PostedMessage] = []
    for first in range(0, len(ended), ERASE_BATCH):
        batch = await _erase_jobs(conn, user_id, ended[first : first + ERASE_BATCH])
        if batch.job_ids:
            erased_jobs += len(batch.job_ids)
            posts += batch.posts
            if erased_batch is not None:
                await erased_batch(batch)
    while True:
        async with transaction(conn):
            pruned = await _erase_pruned_posts(conn, user_id, asked_at)
        posts += pruned
        if len(pruned) < PRUNED_POSTS_BATCH:
            break
    anonymised = 0
    while True:
        async with transaction(conn):
            rows_anonymised = await quotas.anonymise_user(
                conn, user_id, counted_since=counted_since, at_most=ANONYMISE_BATCH
            )
            await erasures.count_anonymised(conn, user_id, rows_anonymised)
        anonymised += rows_anonymised
        if rows_anonymised < ANONYMISE_BATCH:
            break
    async with transaction(conn):
        deferred = await quotas.defer_anonymising(conn, user_id, anonymise_at)
        await erasures.count_deferred(conn, user_id, deferred)
        await conn.execute(
            "DELETE FROM user_settings WHERE user_id = ? AND (? IS NULL OR updated_at <= ?)",
            (user_id, saved_up_to, saved_up_to),
        )
        await presets.delete_member_presets(conn, user_id, saved_up_to)
        await refusals.delete_member_refusals(conn, user_id, saved_up_to)
    return ErasedData(erased_jobs, anonymised, deferred, tuple(sorted(posts)))


async def _erase_jobs(
    conn: aiosqlite.Connection, user_id: int, job_ids: Sequence[str]
) -> ErasedJobs:
    """Erase those of ``job_ids`` (at most ``ERASE_BATCH``) that are still the member's ended
    jobs (retention, or another run of the request, may have erased some meanwhile)."""
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            # ``+user_id``: found by their ids, not among all the member's jobs left.
            "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
            " AND +user_id = ? AND status NOT IN ('queued', 'running') ORDER BY created_at, rowid",
            (json.dumps(job_ids), user_id),
        )
        erased = tuple(str(row[0]) for row in rows)
        if not erased:
            return ErasedJobs((), [], [], ())
        batch = json.dumps(erased)
        image_paths = [
            str(row[0])
            for row in await conn.execute_fetchall(
                "SELECT path FROM images WHERE job_id IN (SELECT value FROM json_each(?))",
                (batch,),
            )
        ]
        # An upload another job still reads (another member's 🔄 or Remix of the member's
        # job, or the member's own in a later batch) stays with that job; retention removes
        # it once no job reads it.
        input_paths = await _inputs_read_by_batch_alone(conn, batch)
        # And the copies other members asked for by DM (the member's own are no longer
        # recorded: ``forget_copies_in``, theirs to delete), deleted as the posts are: each
        # holds the member's picture and its settings.
        copies = await _unlink_posts(conn, batch, "job_copies")
        posts = tuple(sorted((*await _unlink_posts(conn, batch, "job_messages"), *copies)))
        condition = "jobs.id IN (SELECT value FROM json_each(?))"
        await _keep_withdrawn_pictures(conn, condition, (batch,))
        # images and job_inputs go with their job (ON DELETE CASCADE).
        await conn.execute(f"DELETE FROM jobs WHERE {condition}", (batch,))
        counted = erasures.ErasedBatch(list(erased), image_paths, input_paths)
        await erasures.count_batch(conn, user_id, counted, len(posts))
    return ErasedJobs(erased, image_paths, input_paths, posts)


async def _erase_pruned_posts(
    conn: aiosqlite.Connection, user_id: int, asked_at: float
) -> tuple[PostedMessage, ...]:
    """In the caller's transaction: at most ``PRUNED_POSTS_BATCH`` of the posts retention kept
    of the member's jobs made up to ``asked_at`` (``pruned_posts``), unlinked, counted in the
    request's journal and left to delete as the erased jobs' posts are."""
    posts = await _left_to_delete(
        conn,
        "DELETE FROM pruned_posts WHERE message_id IN (SELECT message_id FROM pruned_posts"
        " WHERE user_id = ? AND made_at <= ? LIMIT ?) RETURNING channel_id, message_id",
        (user_id, asked_at, PRUNED_POSTS_BATCH),
    )
    await erasures.count_batch(conn, user_id, erasures.ErasedBatch([], [], []), len(posts))
    return posts


async def _inputs_read_by_batch_alone(conn: aiosqlite.Connection, batch: str) -> list[str]:
    """The pictures the batch's jobs (a JSON list) read that no other job reads
    (``job_inputs``: read through the batch and the path index, never every job's request)."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT mine.path FROM job_inputs AS mine"
        " WHERE mine.job_id IN (SELECT value FROM json_each(:batch))"
        " AND NOT EXISTS (SELECT 1 FROM job_inputs AS other WHERE other.path = mine.path"
        " AND other.job_id NOT IN (SELECT value FROM json_each(:batch)))"
        " ORDER BY mine.path",
        {"batch": batch},
    )
    return [str(row[0]) for row in rows]


async def _unlink_posts(
    conn: aiosqlite.Connection, batch: str, table: Literal["job_messages", "job_copies"]
) -> tuple[PostedMessage, ...]:
    """Unlink and return the posts (or copies by DM) of the batch's jobs (a JSON list), by
    channel: their deletions, which Discord announces, then match no job. Each is left to
    delete (``pending_post_deletes``) until ``post_delete_settled``."""
    return await _left_to_delete(
        conn,
        f"DELETE FROM {table} WHERE job_id IN (SELECT value FROM json_each(?))"
        " RETURNING channel_id, message_id",
        (batch,),
    )


async def _left_to_delete(
    conn: aiosqlite.Connection, unlink: str, parameters: tuple[object, ...]
) -> tuple[PostedMessage, ...]:
    """Run ``unlink`` (a delete of posts' rows returning their channel and message ids), and
    leave each of those posts to delete (``pending_post_deletes``) until
    ``post_delete_settled``; returned by channel."""
    rows = await conn.execute_fetchall(unlink, parameters)
    posts = tuple(sorted(PostedMessage(int(channel), int(message)) for channel, message in rows))
    await conn.executemany(
        "INSERT OR IGNORE INTO pending_post_deletes (channel_id, message_id) VALUES (?, ?)",
        [(post.channel_id, post.message_id) for post in posts],
    )
    return posts


async def pending_post_deletes(
    conn: aiosqlite.Connection, due_at: float
) -> tuple[PostedMessage, ...]:
    """The posts /forget-me erases, or a moderator's withdrawal, still have to delete from
    Discord whose next try is due at ``due_at``, by channel."""
    rows = await conn.execute_fetchall(
        "SELECT channel_id, message_id FROM pending_post_deletes WHERE next_try_at <= ?"
        " ORDER BY channel_id, message_id",
        (due_at,),
    )
    return tuple(PostedMessage(int(channel), int(message)) for channel, message in rows)


async def post_delete_failed(
    conn: aiosqlite.Connection, message_id: int, retry_at: Callable[[int], float | None]
) -> float | Literal["given up", "not pending"]:
    """Discord refused or failed the delete of post ``message_id`` once more: it is tried again
    at ``retry_at(failures so far)``, or given up (its row deleted) when that is None. Returns
    when it is tried again, or that it was given up, or that no delete of it was pending (a
    direct message's, or one settled meanwhile)."""
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            "UPDATE pending_post_deletes SET failures = failures + 1 WHERE message_id = ?"
            " RETURNING failures",
            (message_id,),
        )
        if not rows:
            return "not pending"
        at = retry_at(int(next(iter(rows))[0]))
        if at is None:
            await conn.execute(
                "DELETE FROM pending_post_deletes WHERE message_id = ?", (message_id,)
            )
            return "given up"
        await conn.execute(
            "UPDATE pending_post_deletes SET next_try_at = ? WHERE message_id = ?",
            (at, message_id),
        )
    return at


async def post_delete_settled(conn: aiosqlite.Connection, message_id: int) -> None:
    """The post ``message_id`` is deleted from Discord (or was already): not to delete again."""
    # Not inside another coroutine's transaction, whose rollback would undo it.
    async with outside_transactions(conn):
        await write(conn, "DELETE FROM pending_post_deletes WHERE message_id = ?", (message_id,))


@dataclass(frozen=True)
class PrunedJobs:
    """A batch ``prune_jobs`` deleted: the jobs, the pictures they stored and those they read
    (uploads, other jobs' pictures), as their rows named them."""

    job_ids: tuple[str, ...] = ()
    picture_paths: tuple[str, ...] = ()
    input_paths: tuple[str, ...] = ()


# The jobs retention deletes: those that ended and were delivered before a moment.
_PRUNABLE_WHERE = (
    "+status IN ('done', 'failed', 'cancelled') AND delivered_at IS NOT NULL AND finished_at < ?"
)
_PRUNABLE = f"SELECT id FROM jobs WHERE {_PRUNABLE_WHERE}"


async def prune_jobs(
    conn: aiosqlite.Connection, finished_before: float, at_most: int
) -> PrunedJobs:
    """Delete at most ``at_most`` of the jobs that ended and were delivered before
    ``finished_before``, the oldest first, with their images rows, in one transaction;
    returns them and their files' paths. The caller repeats it until fewer go, so that other
    statements run between batches (a day of jobs in one delete holds the connection for
    seconds). Their files are the caller's (``bot.jobs.retention``), and their ledger rows
    ``db.quotas.prune_settled``'s. The pixels of those a moderator withdrew stay
    (``withdrawn_pictures``), and the ids of their posts and copies by DM, for their makers'
    /forget-me (``pruned_posts``)."""
    async with transaction(conn):
        # ``+status``: on jobs_finished, in the order of their end.
        rows = await conn.execute_fetchall(
            f"{_PRUNABLE} ORDER BY finished_at LIMIT ?", (finished_before, at_most)
        )
        job_ids = tuple(str(row[0]) for row in rows)
        if not job_ids:
            return PrunedJobs()
        placeholders = ", ".join("?" * len(job_ids))
        pictures = await conn.execute_fetchall(
            f"SELECT path FROM images WHERE job_id IN ({placeholders})", job_ids
        )
        inputs = await conn.execute_fetchall(
            f"SELECT DISTINCT path FROM job_inputs WHERE job_id IN ({placeholders})", job_ids
        )
        batch = f"jobs.id IN ({placeholders})"
        await _keep_withdrawn_pictures(conn, batch, job_ids)
        await _keep_posts_of_pruned(conn, batch, job_ids)
        # images and job_inputs go with their job (ON DELETE CASCADE).
        await conn.execute(f"DELETE FROM jobs WHERE {batch}", job_ids)
    return PrunedJobs(
        job_ids, tuple(str(row[0]) for row in pictures), tuple(str(row[0]) for row in inputs)
    )


async def _keep_posts_of_pruned(
    conn: aiosqlite.Connection, condition: str, parameters: tuple[object, ...]
) -> None:
    """Before retention deletes the jobs ``condition`` selects: their posts and copies by DM
    (which go with them) kept by id, with their maker (``pruned_posts``), for the maker's
    /forget-me to delete (``_erase_pruned_posts``)."""
    await conn.execute(
        "INSERT OR IGNORE INTO pruned_posts (message_id, user_id, channel_id, parent_id, made_at)"
        " SELECT posts.message_id, jobs.user_id, posts.channel_id, posts.parent_id,"
        " jobs.created_at FROM jobs JOIN job_messages AS posts ON posts.job_id = jobs.id"
        f" WHERE {condition}"
        " UNION ALL SELECT copies.message_id, jobs.user_id, copies.channel_id, NULL,"
        " jobs.created_at FROM jobs JOIN job_copies AS copies ON copies.job_id = jobs.id"
        f" WHERE {condition}",
        parameters * 2,
    )


async def prune_kept_posts(conn: aiosqlite.Connection, below_id: int) -> int:
    """Retention: the kept posts of pruned jobs (``pruned_posts``) whose message id is below
    ``below_id`` (a snowflake: posted before its time), read by the primary key's range, no
    index needed, deleted ``PRUNED_POSTS_BATCH`` a statement, so that other commands run
    between; how many went. Not those of a member whose /forget-me is journaled and not yet
    told (``erasures``: in its batches, failed, or asked again after a backup was put back):
    that erase takes the posts of when they asked, of the last year then."""
    gone = 0
    while True:
        cursor = await write(
            conn,
            "DELETE FROM pruned_posts WHERE message_id IN (SELECT message_id FROM pruned_posts"
            " WHERE message_id < ? AND user_id NOT IN (SELECT user_id FROM erasures) LIMIT ?)",
            (below_id, PRUNED_POSTS_BATCH),
        )
        gone += cursor.rowcount
        if cursor.rowcount < PRUNED_POSTS_BATCH:
            return gone


async def prunable_files(
    conn: aiosqlite.Connection,
    finished_before: float,
    at_most: int,
    after: tuple[float, int] | None = None,
) -> tuple[PrunedJobs, tuple[float, int] | None]:
    """Read only, so it works on a full disk: the next ``at_most`` jobs ``prune_jobs`` would
    delete before ``finished_before`` (nothing deleted), in the order of their end after
    ``after``, with their files' paths; and where the next batch starts (None after the last).
    At start, before any other statement runs."""
    start = after or (float("-inf"), 0)
    rows = list(
        await conn.execute_fetchall(
            # In the order of jobs_finished (ties by rowid): no sort of every expired job.
            f"SELECT id, finished_at, rowid FROM jobs WHERE {_PRUNABLE_WHERE}"
            " AND (finished_at, rowid) > (?, ?) ORDER BY finished_at, rowid LIMIT ?",
            (finished_before, *start, at_most),
        )
    )
    job_ids = [str(row[0]) for row in rows]
    if not job_ids:
        return PrunedJobs(), None
    marks = ", ".join("?" * len(job_ids))
    pictures = await conn.execute_fetchall(
        f"SELECT path FROM images WHERE job_id IN ({marks})", job_ids
    )
    inputs = await conn.execute_fetchall(
        f"SELECT DISTINCT path FROM job_inputs WHERE job_id IN ({marks})", job_ids
    )
    prunable = PrunedJobs(
        tuple(job_ids),
        tuple(str(row[0]) for row in pictures),
        tuple(str(row[0]) for row in inputs),
    )
    return prunable, (float(rows[-1][1]), int(rows[-1][2])) if len(job_ids) == at_most else None


async def read_by_kept_jobs(
    conn: aiosqlite.Connection, paths: Collection[str], finished_before: float
) -> set[str]:
    """Those of ``paths`` (a batch of ``prunable_files``'s) that a job ``prune_jobs`` would
    keep (deleting before ``finished_before``) reads: by the path index, each reader by its id."""
    listed = list(paths)
    if not listed:
        return set()
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT path FROM job_inputs AS reads"
        f" WHERE path IN ({', '.join('?' * len(listed))})"
        f" AND job_id NOT IN ({_PRUNABLE} AND id = reads.job_id)",
        (*listed, finished_before),
    )
    return {str(row[0]) for row in rows}


async def stored_names_not_plainly_inside(
    conn: aiosqlite.Connection, plainly_inside: Callable[[str], bool]
) -> list[str]:
    """The file names the database stores (pictures, the pictures jobs read, the files an
    erasure has left to delete) that are not a plain path inside the data folder's
    ``images/`` or ``inputs/`` as ``plainly_inside`` (``bot.jobs.stored_files``'s, the rule
    its reads use) tells: ``easel doctor`` then tells which of them lie outside."""
    await conn.create_function("plainly_inside", 1, plainly_inside, deterministic=True)
    rows = await conn.execute_fetchall(
        "SELECT path FROM images WHERE NOT plainly_inside(path)"
        " UNION SELECT path FROM job_inputs WHERE NOT plainly_inside(path)"
        " UNION SELECT path FROM erasure_files WHERE NOT plainly_inside(path)"
    )
    return [str(row[0]) for row in rows]
