"""The job journal and the images (history) each job produced."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

import aiosqlite

from db.database import outside_transactions, transaction, write


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StoppedBy(StrEnum):
    """Who first stopped a job (0037): written with the stop, never over an earlier one."""

    MEMBER = "member"  # its maker's own cancel
    # A moderator's own act on it: /easel-mod withdraw, their Cancel (``db.history``), an
    # admin's cancel of another member's job.
    MODERATOR = "moderator"
    # A stop its maker was put under: a ban, the server's removal, a deletion of its message
    # or channel, the rules of now at its start.
    IMPOSED = "imposed"


@dataclass(frozen=True)
class NewJob:
    id: str
    kind: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    request_json: str
    created_at: float
    parent_job_id: str | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    interaction_created_at: float | None = None
    filesize_limit: int | None = None
    spoiler: bool = False
    priority: int = 1
    private: bool = False  # the member asked to see the result alone
    age_restricted: bool = False  # made in an age-restricted channel (a thread: its parent)
    thread_parent_id: int | None = None  # made in a thread: its channel (0041)


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: JobStatus
    user_id: int
    guild_id: int | None
    channel_id: int | None
    parent_job_id: str | None
    request_json: str
    attempts: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    gpu_seconds: float | None
    application_id: int | None
    interaction_token: str | None
    interaction_created_at: float | None
    delivered_at: float | None
    filesize_limit: int | None
    spoiler: bool
    priority: int
    private: bool
    withdrawn_at: float | None  # when a moderator deleted its result
    age_restricted: bool  # made in an age-restricted channel (0015; before: False)
    # Withdrawn by Easel, not a moderator: its result was withheld at delivery and refunded,
    # its maker told this (0019; ``db.history.withdraw_job``).
    withheld_why: str | None
    # Withdrawn as its channel or thread was deleted: its pixels stay usable elsewhere (0020).
    withdrawn_with_channel: bool
    # Its delivery's tries (0021): when the next is due while undelivered (None: none failed),
    # since when they fail, how many failed; and when a post of it was last tried (None: never).
    delivery_retry_at: float | None
    delivery_failing_since: float | None
    delivery_tries: int
    post_attempted_at: float | None
    # When a stop of it while it ran was asked (0022; None: never): the next start ends it if
    # its end was not written (``ask_cancel``).
    cancel_asked_at: float | None
    # A device was lost, or the process died, while it rendered with other jobs (0030,
    # ``queue_again``, ``requeue_running``): it renders alone until it ends.
    renders_alone: bool = False
    # Submitted in the open, made private by its maker's /settings before its delivery (0031,
    # ``make_undelivered_private``): its interaction's response is public, its result theirs.
    private_since_submit: bool = False
    # Who first stopped it (0037, ``StoppedBy``; None: nobody, or a stop before 0037 other
    # than a moderator's withdrawal).
    stopped_by: StoppedBy | None = None
    # Made in a thread (or forum post): its channel, as the interaction said (0041; None: not
    # a thread, or journaled before 0041).
    thread_parent_id: int | None = None


@dataclass(frozen=True)
class ImageRecord:
    job_id: str
    idx: int
    seed: int
    path: str
    infotext: str
    width: int
    height: int
    # SHA-256 of its decoded pixels (``bot.images.pixel_digest``); None: stored before 0014.
    pixel_digest: bytes | None = None


# Rows made into records between two turns of the event loop's other tasks (about 20 µs each).
RECORDS_PER_TURN = 500


def _job(row: aiosqlite.Row) -> JobRecord:
    data = dict(row)
    data["status"] = JobStatus(data["status"])
    data["spoiler"] = bool(data["spoiler"])
    data["private"] = bool(data["private"])
    data["age_restricted"] = bool(data["age_restricted"])
    data["withdrawn_with_channel"] = bool(data["withdrawn_with_channel"])
    data["renders_alone"] = bool(data["renders_alone"])
    data["private_since_submit"] = bool(data["private_since_submit"])
    if data["stopped_by"] is not None:
        data["stopped_by"] = StoppedBy(data["stopped_by"])
    return JobRecord(**data)


async def _records(rows: Iterable[aiosqlite.Row]) -> list[JobRecord]:
    """``rows`` as records, made a page at a time with the event loop's other tasks run between
    two: a whole status's rows (a deep backlog's, at a start) take a while."""
    left = iter(rows)
    records: list[JobRecord] = []
    while page := list(islice(left, RECORDS_PER_TURN)):
        if records:
            await asyncio.sleep(0)
        records.extend(map(_job, page))
    return records


async def insert_job(conn: aiosqlite.Connection, job: NewJob) -> None:
    """Journal ``job``. One made from another (``parent_job_id``) takes that one's withdrawal
    in the same statement: a moderator's deletion whose withdrawal
    (``db.history.withdraw_deleted_results``) ran while it was being submitted, before it
    existed, still keeps its result from being shown."""
    await conn.execute(
        """INSERT INTO jobs (id, kind, user_id, guild_id, channel_id, parent_job_id, request_json,
                             created_at, application_id, interaction_token, interaction_created_at,
                             filesize_limit, spoiler, priority, private, age_restricted,
                             thread_parent_id, withdrawn_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                   (SELECT withdrawn_at FROM jobs WHERE id = ?))""",
        (
            job.id,
            job.kind,
            job.user_id,
            job.guild_id,
            job.channel_id,
            job.parent_job_id,
            job.request_json,
            job.created_at,
            job.application_id,
            job.interaction_token,
            job.interaction_created_at,
            job.filesize_limit,
            int(job.spoiler),
            job.priority,
            int(job.private),
            int(job.age_restricted),
            job.thread_parent_id,
            job.parent_job_id,
        ),
    )


async def get_job(conn: aiosqlite.Connection, job_id: str) -> JobRecord | None:
    async with conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
        row = await cursor.fetchone()
    return _job(row) if row else None


async def job_exists(conn: aiosqlite.Connection, job_id: str) -> bool:
    """Whether ``job_id`` is journaled (not erased by /forget-me, nor pruned by retention)."""
    async with conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)) as cursor:
        return await cursor.fetchone() is not None


async def jobs_with_status(conn: aiosqlite.Connection, status: JobStatus) -> list[JobRecord]:
    """The jobs in ``status``, in the order they were submitted; jobs of the same second in
    the order they were journaled (rowid, as ``journaled_order``), so a restart restores a
    queue in its order."""
    async with conn.execute(
        "SELECT * FROM jobs WHERE status = ? ORDER BY created_at, rowid", (status.value,)
    ) as cursor:
        return await _records(await cursor.fetchall())


# A member's queued and running jobs in a guild, read from their own index (0024) whatever the
# planner's statistics say: unknown, ``jobs_member_server`` (0044) looked as narrow and, in
# created_at's order, took /cancel's read (every job of the member's there, 42 ms at 20,000).
_UNFINISHED_OF_MEMBER = (
    "INDEXED BY jobs_unfinished_member"
    " WHERE user_id = ? AND guild_id IS ? AND status IN ('queued', 'running')"
)


async def unfinished_of(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None
) -> tuple[int, int]:
    """How many jobs the member has queued or running in the guild (None: direct messages),
    and the pictures they ask for (each request's ``count``)."""
    async with conn.execute(
        f"""SELECT COUNT(*), COALESCE(SUM(json_extract(request_json, '$.count')), 0)
           FROM jobs {_UNFINISHED_OF_MEMBER}""",
        (user_id, guild_id),
    ) as cursor:
        row = await cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def unfinished_pictures_of(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None
) -> list[tuple[str, int]]:
    """The member's queued and running jobs in the guild (None: direct messages), each id
    with the pictures it asks for (its request's ``count``, as ``unfinished_of`` sums them)."""
    async with conn.execute(
        f"""SELECT id, COALESCE(json_extract(request_json, '$.count'), 0)
           FROM jobs {_UNFINISHED_OF_MEMBER}""",
        (user_id, guild_id),
    ) as cursor:
        return [(str(job_id), int(pictures)) for job_id, pictures in await cursor.fetchall()]


async def unfinished_jobs_of(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None
) -> list[JobRecord]:
    """The member's queued and running jobs in the guild (None: direct messages), oldest
    first. One statement: a job moving from queued to running meanwhile is in it either way."""
    async with conn.execute(
        f"SELECT * FROM jobs {_UNFINISHED_OF_MEMBER} ORDER BY created_at, rowid",
        (user_id, guild_id),
    ) as cursor:
        return [_job(row) for row in await cursor.fetchall()]


async def members_with_unfinished_jobs_in(
    conn: aiosqlite.Connection, guild_id: int
) -> dict[int, list[str]]:
    """The members with a job queued or running in the guild, each with those jobs' ids."""
    members: dict[int, list[str]] = {}
    async with conn.execute(
        """SELECT user_id, id FROM jobs
           WHERE guild_id = ? AND status IN ('queued', 'running')
           ORDER BY created_at, rowid""",
        (guild_id,),
    ) as cursor:
        for user_id, job_id in await cursor.fetchall():
            members.setdefault(int(user_id), []).append(str(job_id))
    return members


async def latest_unposted_result_of(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None
) -> str | None:
    """The id of the member's newest job in the guild (None: direct messages) that is done
    but not yet posted, if any."""
    async with conn.execute(
        """SELECT id FROM jobs INDEXED BY jobs_unposted_results
           WHERE user_id = ? AND guild_id IS ? AND status = 'done' AND delivered_at IS NULL
           ORDER BY created_at DESC, rowid DESC LIMIT 1""",
        (user_id, guild_id),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


# The jobs that count as started (``members_who_started``); ``jobs_user_started`` (0029)
# indexes exactly these, and SQLite uses it only where a query repeats this condition.
_STARTED = "(jobs.started_at IS NOT NULL OR jobs.attempts > 0)"


async def members_who_started(conn: aiosqlite.Connection, user_ids: Collection[int]) -> set[int]:
    """Those of ``user_ids`` with a job the journal holds as started: ``started_at`` set by
    ``mark_running`` (cleared by a start that did not happen, ``queue_again``, which gives its
    attempt back), or an attempt counted by a render a crash interrupted (``requeue_running``
    clears its ``started_at``): the scheduler's returners (``bot.jobs.scheduler``, rule 2). One
    look-up per member on ``jobs_user_started``, however many jobs they queued and cancelled."""
    if not user_ids:
        return set()
    rows = await conn.execute_fetchall(
        "SELECT member.value FROM json_each(?) AS member WHERE EXISTS (SELECT 1 FROM jobs"
        f" WHERE jobs.user_id = member.value AND {_STARTED})",
        (json.dumps(sorted(set(user_ids))),),
    )
    return {int(row[0]) for row in rows}


# Ended jobs whose outcome is not posted yet. ``+status``: on jobs_undelivered (0023); on the
# status index SQLite would walk every ended job.
_ENDED_UNDELIVERED = "+status IN ('done', 'failed', 'cancelled') AND delivered_at IS NULL"


async def finished_undelivered(conn: aiosqlite.Connection) -> list[JobRecord]:
    async with conn.execute(
        f"SELECT * FROM jobs WHERE {_ENDED_UNDELIVERED} ORDER BY finished_at, rowid"
    ) as cursor:
        return await _records(await cursor.fetchall())


async def unserved_listing(
    conn: aiosqlite.Connection,
    job_id: str,
    user_id: int,
    error: str,
    at_most: int,
    servers_at_most: int,
) -> list[tuple[str, int]] | None:
    """The jobs the direct message about ``job_id`` (a job of the member ``user_id``
    withheld for its server left out) names, each with its server, ``job_id`` first: those
    recorded for it (``unserved_listings``), else it and the member's other ended jobs whose
    outcome waits for its post, whose recorded error is ``error`` and that no DM names yet,
    oldest first, ``at_most`` in all, of ``servers_at_most`` servers at most, recorded so in
    the same transaction. None: a DM told already (``unserved_listing_told``), or another
    job's, names it; empty: ``job_id`` is not journaled."""
    async with transaction(conn):
        listed_in = await conn.execute_fetchall(
            "SELECT listed_in, told_at FROM unserved_listings WHERE job_id = ?", (job_id,)
        )
        if listed_in:
            [(leader, told_at)] = listed_in
            if leader != job_id or told_at is not None:
                return None
            rows = await conn.execute_fetchall(
                """SELECT jobs.id, jobs.guild_id FROM unserved_listings
                   JOIN jobs ON jobs.id = unserved_listings.job_id
                   WHERE unserved_listings.listed_in = ?
                   ORDER BY jobs.id != ?, jobs.created_at, jobs.rowid""",
                (job_id, job_id),
            )
            return [(str(listed), int(guild_id)) for listed, guild_id in rows]
        rows = await conn.execute_fetchall(
            f"""SELECT id, guild_id FROM jobs
                WHERE id = ? OR ({_ENDED_UNDELIVERED} AND user_id = ? AND error = ?
                    AND guild_id IS NOT NULL
                    AND id NOT IN (SELECT job_id FROM unserved_listings))
                ORDER BY id != ?, created_at, rowid""",
            (job_id, user_id, error, job_id),
        )
        listed: list[tuple[str, int]] = []
        servers: set[int] = set()
        for listed_id, guild_id in rows:
            if len(listed) == at_most:
                break
            if guild_id not in servers and len(servers) == servers_at_most:
                continue
            servers.add(guild_id)
            listed.append((str(listed_id), int(guild_id)))
        if not listed or listed[0][0] != job_id:
            return []  # not journaled: named alone, nothing recorded
        await conn.executemany(
            "INSERT INTO unserved_listings (job_id, listed_in) VALUES (?, ?)",
            [(listed_id, job_id) for listed_id, _ in listed],
        )
    return listed


async def unserved_listing_told(conn: aiosqlite.Connection, job_id: str, now: float) -> None:
    """The DM about ``job_id`` naming its listing (``unserved_listing``) went to its maker."""
    await write(conn, "UPDATE unserved_listings SET told_at = ? WHERE listed_in = ?", (now, job_id))


async def unserved_listing_failed(conn: aiosqlite.Connection, job_id: str) -> None:
    """The DM about ``job_id`` naming its listing (``unserved_listing``) failed: the listing
    is forgotten, so the deliveries still to come of the jobs it named list them again."""
    await write(conn, "DELETE FROM unserved_listings WHERE listed_in = ?", (job_id,))


async def undelivered_count(conn: aiosqlite.Connection) -> int:
    """How many ended jobs wait for their outcome's post (``finished_undelivered``'s)."""
    async with conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {_ENDED_UNDELIVERED}") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def journaled_order(conn: aiosqlite.Connection, job_ids: Collection[str]) -> dict[str, int]:
    """Each of ``job_ids``' place in the order the jobs were journaled: its rowid (a new row
    gets the greatest rowid plus one, so a job's is greater than that of every job journaled
    before it and still there). A job not there has none."""
    if not job_ids:
        return {}
    placeholders = ", ".join("?" * len(job_ids))
    rows = await conn.execute_fetchall(
        f"SELECT id, rowid FROM jobs WHERE id IN ({placeholders})", tuple(job_ids)
    )
    return {str(job_id): int(rowid) for job_id, rowid in rows}


async def requeue_running(
    conn: aiosqlite.Connection, max_attempts: int
) -> tuple[int, list[tuple[str, str]]]:
    """Jobs a dead process left running go back to the queue while they were started fewer
    than ``max_attempts`` times (``attempts``, counted by ``mark_running``): one that took the
    process down with it that often would at every start. Jobs that were rendering together,
    a batch (one ``mark_running``: one ``started_at``; only jobs on their first start, and not
    marked to render alone, are batched), get that attempt back, since which of them it was
    is not known, and each renders alone from then on (``renders_alone``, as ``queue_again``
    does for a device lost under them): a lone job's attempt counts. Returns how many
    were requeued, and the ids and kinds of those left running, for the caller to fail (oldest
    first) and count under their kind.
    One whose stop was asked (``ask_cancel``) goes back to the queue whatever its attempts:
    the caller ends it there as cancelled, which is what its member was told, not as failed."""
    async with transaction(conn):
        await conn.execute(
            """WITH batchable AS (
                   SELECT id, started_at FROM jobs
                   WHERE status = 'running' AND attempts = 1 AND NOT renders_alone)
               UPDATE jobs SET attempts = 0, renders_alone = 1
               WHERE id IN (
                   SELECT id FROM batchable WHERE started_at IN (
                       SELECT started_at FROM batchable
                       GROUP BY started_at HAVING COUNT(*) > 1))"""
        )
        spent = await conn.execute_fetchall(
            """SELECT id, kind FROM jobs
               WHERE status = 'running' AND attempts >= ? AND cancel_asked_at IS NULL
               ORDER BY created_at, rowid""",
            (max_attempts,),
        )
        cursor = await conn.execute(
            """UPDATE jobs SET status = 'queued', started_at = NULL
               WHERE status = 'running' AND (attempts < ? OR cancel_asked_at IS NOT NULL)""",
            (max_attempts,),
        )
    return cursor.rowcount, [(str(job_id), str(kind)) for job_id, kind in spent]


async def mark_running(
    conn: aiosqlite.Connection,
    job_ids: Iterable[str],
    now: float,
    *,
    counts_attempt: bool = True,
    running_still: Collection[str] = (),
) -> list[JobRecord]:
    """Mark those of ``job_ids`` still queued as running; returns exactly those (in the order
    of ``job_ids``): one cancelled or erased meanwhile is neither marked nor returned. Those
    of ``running_still`` are marked too while running: starts that did not happen, whose
    "queued again" the journal refused (``queue_again``). One statement, read whole in the
    same call (a ``RETURNING`` left half-read across an await would fail another coroutine's
    ``COMMIT``). ``counts_attempt``: the start counts as a render attempt
    (``requeue_running``), as a render in this process does."""
    order = {job_id: index for index, job_id in enumerate(job_ids)}
    if not order:
        return []
    placeholders = ", ".join("?" * len(order))
    restarted = [job_id for job_id in order if job_id in running_still]
    restarted_placeholders = ", ".join("?" * len(restarted))
    # A transaction of its own: while another process holds the write lock, its wait lets
    # other coroutines' reads through (``transaction``), where a lone write's holds them up.
    # ``+status``: found by id; on the status index SQLite would walk every queued job.
    async with transaction(conn):
        rows = await conn.execute_fetchall(
            f"""UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + ?
                WHERE id IN ({placeholders})
                AND (+status = 'queued' OR +status = 'running' AND id IN ({restarted_placeholders}))
                RETURNING *""",
            (now, int(counts_attempt), *order, *restarted),
        )
    return sorted((_job(row) for row in rows), key=lambda job: order[job.id])


# Who stopped a job: the first stopper recorded is kept, unless the one writing now clicked
# before any was recorded (its parameters: clicked_first, stopped_by, stopped_by).
_FIRST_STOPPER = (
    "stopped_by = CASE WHEN ? THEN COALESCE(?, stopped_by) ELSE COALESCE(stopped_by, ?) END"
)


async def ask_cancel(
    conn: aiosqlite.Connection,
    job_id: str,
    now: float,
    stopped_by: StoppedBy | None = None,
    *,
    clicked_first: bool = False,
) -> None:
    """Record that a stop of ``job_id`` was asked at ``now`` by ``stopped_by`` (None: recorded
    already; the first ask, and the first stopper, are kept, but for ``clicked_first``, as in
    ``mark_failed``) while it is queued or running, before its asker is told it stops: a start
    that finds it still unfinished ends it (``bot.jobs.queue.JobQueue.start``)."""
    await conn.execute(
        f"""UPDATE jobs SET cancel_asked_at = COALESCE(cancel_asked_at, ?), {_FIRST_STOPPER}
           WHERE id = ? AND +status IN ('queued', 'running')""",
        (now, clicked_first, stopped_by, stopped_by, job_id),
    )


async def clear_cancel_ask(conn: aiosqlite.Connection, job_id: str) -> None:
    """Forget the stop asked of ``job_id`` (``ask_cancel``) while it is running: the ask came
    too late to stop its render, so a start that finds it running renders it again rather
    than ending a job its member was told had finished; nor did anyone stop it."""
    await conn.execute(
        "UPDATE jobs SET cancel_asked_at = NULL, stopped_by = NULL"
        " WHERE id = ? AND +status = 'running'",
        (job_id,),
    )


async def give_back_attempts(conn: aiosqlite.Connection, job_ids: Collection[str]) -> None:
    """Those of ``job_ids`` still running were not ended by their render (a graceful stop
    abandoned them): their attempt is not counted against them (``requeue_running``)."""
    if not job_ids:
        return
    placeholders = ", ".join("?" * len(job_ids))
    await write(
        conn,
        f"""UPDATE jobs SET attempts = attempts - 1
            WHERE id IN ({placeholders}) AND +status = 'running' AND attempts > 0""",
        tuple(job_ids),
    )


async def queue_again(
    conn: aiosqlite.Connection,
    job_ids: Collection[str],
    *,
    attempt_counted: bool,
    renders_alone: bool = False,
) -> None:
    """Those of ``job_ids`` still running did not start after all (their slot could not hand
    them over), or were not the cause of their end (a device lost under several jobs): queued
    again, their attempt given back when their start counted one; with ``renders_alone``,
    each renders alone from then on (``JobRecord.renders_alone``)."""
    if not job_ids:
        return
    placeholders = ", ".join("?" * len(job_ids))
    await write(
        conn,
        f"""UPDATE jobs SET status = 'queued', started_at = NULL,
                attempts = MAX(attempts - ?, 0), renders_alone = MAX(renders_alone, ?)
            WHERE id IN ({placeholders}) AND +status = 'running'""",
        (int(attempt_counted), int(renders_alone), *job_ids),
    )


async def mark_done(
    conn: aiosqlite.Connection,
    job_id: str,
    images: list[ImageRecord],
    gpu_seconds: float,
    now: float,
    posted_digests: Collection[bytes] = (),
) -> None:
    """Record the pictures and the finished state. Three statements: run it inside the
    caller's ``transaction``, with the job's charge (``JobQueue``), so a crash leaves all or
    none. ``posted_digests``: the pixel digests of what the job is posted as besides its stored
    pictures (the grid of a job of several, a JPEG preview of one too large for Discord)."""
    await conn.executemany(
        """INSERT OR REPLACE INTO images
               (job_id, idx, seed, path, infotext, width, height, pixel_digest)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (i.job_id, i.idx, i.seed, i.path, i.infotext, i.width, i.height, i.pixel_digest)
            for i in images
        ],
    )
    await conn.executemany(
        "INSERT OR REPLACE INTO posted_grids (job_id, pixel_digest) VALUES (?, ?)",
        [(job_id, digest) for digest in posted_digests],
    )
    await conn.execute(
        """UPDATE jobs SET status = 'done', finished_at = ?, gpu_seconds = ?, error = NULL
           WHERE id = ?""",
        (now, gpu_seconds, job_id),
    )


async def mark_failed(
    conn: aiosqlite.Connection,
    job_id: str,
    error: str,
    now: float,
    *,
    cancelled: bool = False,
    stopped_by: StoppedBy | None = None,
    clicked_first: bool = False,
) -> None:
    """Record the job's end without pictures, a cancel's with who stopped it (``stopped_by``;
    None: recorded with its ask, or a failure), unless someone stopped it before; or over a
    stop recorded since its stopper clicked (``clicked_first``: the journal held none then,
    and a moderator's withdrawal committed while this end waited for another writer's lock).
    Run it in the caller's ``transaction`` with the job's refund or charge (``JobQueue``), so
    a crash leaves both or neither."""
    status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
    await conn.execute(
        f"UPDATE jobs SET status = ?, finished_at = ?, error = ?, {_FIRST_STOPPER} WHERE id = ?",
        (status.value, now, error, clicked_first, stopped_by, stopped_by, job_id),
    )


@dataclass(frozen=True)
class UnsettledEnd:
    """A job that ended while its quota reservation is still open (neither charged nor
    refunded): a process died between the two writes, before they shared a transaction."""

    job_id: str
    status: JobStatus
    gpu_seconds: float  # measured, for a done job; 0.0 for one that failed or was cancelled
    images: int  # the pictures it stored


async def ended_unsettled(conn: aiosqlite.Connection) -> list[UnsettledEnd]:
    """The ended jobs whose reservation is open (``UnsettledEnd``), oldest end first. Only
    undelivered ones can be: an end is written with its charge or refund (one transaction),
    and a job is delivered after its end; so a start reads those (jobs_undelivered, 0023),
    not every reservation. A job a process before the fourteenth stop delivered unsettled
    is not found (its reservation counts until its quota periods end)."""
    rows = await conn.execute_fetchall(
        "SELECT jobs.id, jobs.status, COALESCE(jobs.gpu_seconds, 0.0),"
        " (SELECT COUNT(*) FROM images WHERE images.job_id = jobs.id)"
        " FROM jobs CROSS JOIN quota_ledger AS r ON r.job_id = jobs.id AND r.kind = 'reserve'"
        " WHERE +jobs.status IN ('done', 'failed', 'cancelled') AND jobs.delivered_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM quota_ledger AS s"
        " WHERE s.job_id = r.job_id AND s.kind IN ('commit', 'refund'))"
        " ORDER BY jobs.finished_at, jobs.rowid"
    )
    return [
        UnsettledEnd(str(job_id), JobStatus(status), float(seconds), int(images))
        for job_id, status, seconds, images in rows
    ]


async def mark_delivered(
    conn: aiosqlite.Connection, job_id: str, now: float, *, posted_in_channel: bool = False
) -> bool:
    """Record the delivery; the interaction token, needed only to post it, is blanked. Its
    post in a server's channel is one of its job's posts (``job_messages``) already: the sink
    links it as soon as it is posted (``History.result_posted``), before this. Whether the job
    is still there (False: its maker's /forget-me erased it while it was posted).
    ``posted_in_channel``: its result is public there, so a job made private by its maker's
    /settings saved while it was posted (``make_undelivered_private``) is public again: its
    row says what everyone sees (buttons, /show and the dashboard follow it)."""
    public_again = (
        ", private = private AND NOT private_since_submit, private_since_submit = 0"
        if posted_in_channel
        else ""
    )
    # Wholly before or after the /forget-me transaction that erases the job (erase_user's
    # batch), never inside it: the job is either erased there with its posts, or found
    # missing here and its post deleted.
    async with outside_transactions(conn):
        cursor = await write(
            conn,
            f"UPDATE jobs SET delivered_at = ?, interaction_token = NULL{public_again}"
            " WHERE id = ?",
            (now, job_id),
        )
        return cursor.rowcount > 0


# Makes public server jobs private, their responses staying public (``private_since_submit``):
# a direct message's job is private to no one else either.
_MAKE_PRIVATE = (
    "UPDATE jobs SET private = 1, private_since_submit = 1"
    " WHERE NOT private AND guild_id IS NOT NULL AND delivered_at IS NULL"
)


async def make_undelivered_private(conn: aiosqlite.Connection, user_id: int) -> int:
    """Make the member's server jobs not delivered yet (queued, running, or ended with their
    outcome still to post) private, in every server: they turned private results on, which
    their deliveries follow (``DiscordResults._posted``), and so must every other reader of
    ``private`` (the dashboard, buttons, /show). Delivered ones stay as posted. How many."""
    cursor = await conn.execute(f"{_MAKE_PRIVATE} AND user_id = ?", (user_id,))
    return cursor.rowcount


async def make_private(conn: aiosqlite.Connection, job_id: str) -> None:
    """Make one job private as ``make_undelivered_private`` does: its delivery found its maker
    keeping results private where the row says public (a fallback: the settings' save and the
    admission, ``make_private_if_kept``, mark such jobs; a writer of the setting that does
    neither would leave one)."""
    await write(conn, f"{_MAKE_PRIVATE} AND id = ?", (job_id,))


async def make_private_if_kept(conn: aiosqlite.Connection, job_id: str) -> None:
    """Make the job just journaled private as ``make_undelivered_private`` does when its
    maker keeps results private: their /settings saved after its submit read them, before
    its journaling (one transaction after the other), which it missed."""
    await conn.execute(
        f"{_MAKE_PRIVATE} AND id = ? AND EXISTS (SELECT 1 FROM user_settings"
        " WHERE user_settings.user_id = jobs.user_id AND private_results)",
        (job_id,),
    )


async def is_private(conn: aiosqlite.Connection, job_id: str) -> bool:
    """Whether the job is private (as submitted, or made so since); False when it is gone."""
    async with conn.execute("SELECT private FROM jobs WHERE id = ?", (job_id,)) as cursor:
        row = await cursor.fetchone()
    return row is not None and bool(row[0])


async def mark_post_attempted(conn: aiosqlite.Connection, job_id: str, now: float) -> None:
    """A post of ``job_id``'s outcome is tried at ``now`` (the latest try is kept)."""
    await write(conn, "UPDATE jobs SET post_attempted_at = ? WHERE id = ?", (now, job_id))


# A job's posts recorded since it finished, and since its latest try of a post began, that a
# delivery reads: the post of the first try, or of the latest, comes first among them (a
# /show of the job there comes after it).
POSTS_SINCE_TRY = 3


async def first_posts_in(
    conn: aiosqlite.Connection,
    job_id: str,
    channel_id: int,
    *,
    discord_epoch_ms: int,
    clock_slack_s: float,
) -> tuple[int, ...]:
    """The ids of ``job_id``'s posts recorded in ``channel_id`` (``job_messages``) that a
    try of a post may have made, oldest first: its first one (its interaction's original
    response, which a try's edit may have made the result), the first ``POSTS_SINCE_TRY``
    recorded since it finished (none can be posted before: an older try's post, when a later
    try failed before it could look), and the first ``POSTS_SINCE_TRY`` since its latest try
    began (``post_attempted_at``; none when it was never tried: a try hours later, after
    /show copies of the job). Bounded: /show copies between them are not read. A message id
    counts milliseconds from ``discord_epoch_ms`` in its upper bits; Easel's clock may run
    ``clock_slack_s`` ahead of Discord's (``bot.snowflakes``'s values: db imports no bot)."""
    rows = await conn.execute_fetchall(
        """WITH tries(began) AS (
               SELECT finished_at FROM jobs WHERE id = :job
               UNION SELECT post_attempted_at FROM jobs WHERE id = :job),
           since_each AS (
               SELECT posts.message_id,
                      ROW_NUMBER() OVER (PARTITION BY tries.began ORDER BY posts.message_id) AS nth
               FROM tries JOIN job_messages AS posts
                 ON posts.job_id = :job AND posts.channel_id = :channel
                AND posts.message_id >= (CAST((tries.began - :slack) * 1000 AS INTEGER)
                                         - :epoch) << 22)
           SELECT MIN(message_id) FROM job_messages WHERE job_id = :job AND channel_id = :channel
           UNION
           SELECT message_id FROM since_each WHERE nth <= :since
           ORDER BY 1""",
        {
            "job": job_id,
            "channel": channel_id,
            "slack": clock_slack_s,
            "epoch": discord_epoch_ms,
            "since": POSTS_SINCE_TRY,
        },
    )
    return tuple(int(message_id) for (message_id,) in rows if message_id is not None)


async def queued_progress_posts(conn: aiosqlite.Connection) -> list[tuple[str, int, int]]:
    """The queued jobs' public progress messages (job, channel, message): each one's first
    post recorded in its channel, which for a job not finished yet is its interaction's
    original response (recorded once an edit of it landed in the open; a private one's is
    in no channel)."""
    rows = await conn.execute_fetchall(
        """SELECT jobs.id, jobs.channel_id, MIN(posts.message_id)
           FROM jobs JOIN job_messages AS posts
             ON posts.job_id = jobs.id AND posts.channel_id = jobs.channel_id
           WHERE jobs.status = ?
           GROUP BY jobs.id""",
        (JobStatus.QUEUED.value,),
    )
    return [(str(job_id), int(channel), int(message)) for job_id, channel, message in rows]


async def queued_private_tokens(conn: aiosqlite.Connection) -> list[tuple[str, int, str, float]]:
    """The queued private jobs whose interaction token is kept (job, application, token, when
    made): their ephemeral responses can be edited through it alone. The token sweep blanks
    those past their life (``clear_expired_tokens``): few rows."""
    rows = await conn.execute_fetchall(
        """SELECT id, application_id, interaction_token, interaction_created_at FROM jobs
           WHERE status = ? AND private AND NOT private_since_submit
             AND interaction_token IS NOT NULL AND application_id IS NOT NULL
             AND interaction_created_at IS NOT NULL""",
        (JobStatus.QUEUED.value,),
    )
    return [(str(job), int(app), str(token), float(made)) for job, app, token, made in rows]


async def delivery_failed(
    conn: aiosqlite.Connection, job_id: str, now: float, retry_at: float
) -> None:
    """A try of ``job_id``'s delivery failed: one more counted, the next due at ``retry_at``."""
    await write(
        conn,
        """UPDATE jobs SET delivery_tries = delivery_tries + 1, delivery_retry_at = ?,
                           delivery_failing_since = COALESCE(delivery_failing_since, ?)
           WHERE id = ? AND delivered_at IS NULL""",
        (retry_at, now, job_id),
    )


async def deliveries_due(
    conn: aiosqlite.Connection, now: float, limit: int, excluding: Collection[str] = ()
) -> list[JobRecord]:
    """At most ``limit`` undelivered jobs whose next delivery try is due, the longest due
    first, none of ``excluding`` (ids: those whose delivery waits elsewhere, which would
    otherwise fill the page)."""
    async with conn.execute(
        """SELECT * FROM jobs WHERE delivery_retry_at <= ? AND delivered_at IS NULL
             AND id NOT IN (SELECT value FROM json_each(?))
           ORDER BY delivery_retry_at LIMIT ?""",
        (now, json.dumps(sorted(excluding)), limit),
    ) as cursor:
        return [_job(row) for row in await cursor.fetchall()]


async def fail_undeliverable(conn: aiosqlite.Connection, job_id: str, error: str) -> bool:
    """A done job whose result cannot be posted is failed with ``error``: its pictures'
    records go (shown nowhere later, as it is refunded), and its delivery's tries start over
    for the failure's own post. Whether it was done and undelivered; for the caller's
    transaction, with the refund."""
    cursor = await conn.execute(
        """UPDATE jobs SET status = 'failed', error = ?, delivery_retry_at = NULL,
                           delivery_failing_since = NULL, delivery_tries = 0,
                           post_attempted_at = NULL
           WHERE id = ? AND status = 'done' AND delivered_at IS NULL""",
        (error, job_id),
    )
    if cursor.rowcount == 0:
        return False
    await conn.execute("DELETE FROM images WHERE job_id = ?", (job_id,))
    await conn.execute("DELETE FROM posted_grids WHERE job_id = ?", (job_id,))
    return True


async def record_job_message(
    conn: aiosqlite.Connection,
    job_id: str,
    message_id: int,
    *,
    posted_in: tuple[int, int] | None = None,
    parent_id: int | None = None,
) -> bool:
    """Easel posted ``job_id``'s pictures as ``message_id`` in a server: in ``posted_in``
    (guild, channel; /show and U1-U4 posts), by default where the job was made (its result;
    nothing for a job of direct messages); ``parent_id``: the channel of that thread (None:
    not a thread), whose deletion deletes the post. Whether the job is still there: when its
    maker's /forget-me erased it while it was posted, nothing is linked and the post is left
    to delete as the erase leaves its posts (``pending_post_deletes``), in the same statement
    that finds the job gone: a stop or a failed delete afterwards leaves it to /forget-me's
    sweep. The caller deletes it at once and settles it (``post_delete_settled``)."""
    guild_id, channel_id = posted_in or (None, None)
    # Wholly before or after the /forget-me transaction that erases the job (erase_user's
    # batch), never inside it: the post is either unlinked and returned there, or found
    # missing here and deleted by its poster.
    async with outside_transactions(conn):
        cursor = await write(
            conn,
            "INSERT OR IGNORE INTO job_messages"
            " (message_id, job_id, guild_id, channel_id, parent_id)"
            " SELECT :message, id, COALESCE(:guild, guild_id), COALESCE(:channel, channel_id),"
            " :parent FROM jobs WHERE id = :job AND COALESCE(:guild, guild_id) IS NOT NULL"
            " AND COALESCE(:channel, channel_id) IS NOT NULL",
            {
                "message": message_id,
                "guild": guild_id,
                "channel": channel_id,
                "parent": parent_id,
                "job": job_id,
            },
        )
        if cursor.rowcount > 0:
            return True
        if channel_id is not None:
            await write(
                conn,
                "INSERT OR IGNORE INTO pending_post_deletes (channel_id, message_id)"
                " SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = ?)",
                (channel_id, message_id, job_id),
            )
        return await job_exists(conn, job_id)


async def clear_expired_tokens(conn: aiosqlite.Connection, before: float) -> int:
    """Blank the interaction tokens issued before ``before`` (Discord no longer accepts
    them) of jobs journaled before it too (``created_at``, stamped by the host's clock, as
    ``before`` is): with the host's clock ahead of Discord's, the time of issue alone
    (Discord's) would judge every token of this run expired at once. Returns how many."""
    cursor = await write(
        conn,
        "UPDATE jobs SET interaction_token = NULL WHERE interaction_token IS NOT NULL"
        " AND interaction_created_at < :before AND created_at < :before",
        {"before": before},
    )
    return cursor.rowcount


async def input_picture_paths(conn: aiosqlite.Connection) -> set[str]:
    """Every picture a job in the journal reads (``init_image``, ``mask_image``, ControlNet
    and image prompt pictures): uploads, or another job's stored result (``job_inputs``,
    0023: one index read, no request parsed)."""
    async with conn.execute("SELECT DISTINCT path FROM job_inputs") as cursor:
        return {str(row[0]) for row in await cursor.fetchall()}


# Paths asked about per statement (SQLite's variables, and the connection shared meanwhile).
_PATHS_PER_READ = 500


async def paths_read(conn: aiosqlite.Connection, paths: Collection[str]) -> set[str]:
    """Those of ``paths`` a job in the journal reads (``job_inputs``, by its path index: only
    those paths, not every job's)."""
    read: set[str] = set()
    listed = list(paths)
    for start in range(0, len(listed), _PATHS_PER_READ):
        chunk = listed[start : start + _PATHS_PER_READ]
        async with conn.execute(
            f"SELECT DISTINCT path FROM job_inputs WHERE path IN ({', '.join('?' * len(chunk))})",
            chunk,
        ) as cursor:
            read.update(str(row[0]) for row in await cursor.fetchall())
    return read


async def jobs_with_picture(
    conn: aiosqlite.Connection, guild_id: int, pixel_digest: bytes, limit: int
) -> list[tuple[str, bool]]:
    """The jobs of ``guild_id`` one of whose stored pictures, or the grid it was posted as, has
    these pixels (``limit`` of them), each with whether it refuses an upload of them: one a
    moderator withdrew (not one withdrawn with its deleted channel, nor one Easel withheld:
    their rule was their channel's or their texts'), unless an older job with those pixels
    still stands (a withdrawal goes forward only: a copy's deletion does not reach the
    original). Those that refuse first, then the ones not withdrawn, then the newest."""
    with_pixels = (
        "SELECT job_id FROM images WHERE pixel_digest = :digest"
        " UNION SELECT job_id FROM posted_grids WHERE pixel_digest = :digest"
    )
    async with conn.execute(
        "SELECT jobs.id, jobs.withdrawn_at IS NOT NULL AND jobs.withheld_why IS NULL"
        " AND NOT jobs.withdrawn_with_channel AND NOT EXISTS (SELECT 1 FROM jobs older"
        f" WHERE older.guild_id = :guild AND older.id IN ({with_pixels})"
        " AND older.withdrawn_at IS NULL AND older.created_at < jobs.created_at) AS refuses"
        f" FROM jobs WHERE jobs.guild_id = :guild AND jobs.id IN ({with_pixels})"
        " ORDER BY refuses DESC, jobs.withdrawn_at IS NULL DESC, jobs.created_at DESC,"
        " jobs.rowid DESC LIMIT :limit",
        {"digest": pixel_digest, "guild": guild_id, "limit": limit},
    ) as cursor:
        return [(str(row[0]), bool(row[1])) for row in await cursor.fetchall()]


async def erased_picture_withdrawn(
    conn: aiosqlite.Connection, guild_id: int, pixel_digest: bytes
) -> bool:
    """Whether a moderator of ``guild_id`` withdrew a job with these pixels that its maker's
    /forget-me erased since (``withdrawn_pictures``)."""
    async with conn.execute(
        "SELECT 1 FROM withdrawn_pictures WHERE guild_id = ? AND pixel_digest = ?",
        (guild_id, pixel_digest),
    ) as cursor:
        return await cursor.fetchone() is not None


async def pixels_withdrawn(conn: aiosqlite.Connection, job_id: str, guild_id: int) -> bool:
    """Whether one of ``job_id``'s pictures has the pixels of an older job of ``guild_id``
    that a moderator withdrew (a withdrawal goes to the same pixels made after it only, as
    ``db.history`` spreads it; one Easel withheld, or one withdrawn with its deleted channel,
    is left out: its rule was its channel's or its texts'), or of one erased since. Its own
    withdrawal is not counted: the delivery tells that one apart
    (``placed_under_rules_of_now``)."""
    async with conn.execute(
        "SELECT EXISTS (SELECT 1 FROM images mine"
        " JOIN jobs made ON made.id = mine.job_id"
        " JOIN images twin ON twin.pixel_digest = mine.pixel_digest"
        " JOIN jobs ON jobs.id = twin.job_id"
        " WHERE mine.job_id = :job AND jobs.id != :job AND jobs.guild_id = :guild"
        " AND jobs.created_at < made.created_at"
        " AND jobs.withdrawn_at IS NOT NULL AND jobs.withheld_why IS NULL"
        " AND NOT jobs.withdrawn_with_channel)"
        " OR EXISTS (SELECT 1 FROM images mine JOIN withdrawn_pictures erased"
        " ON erased.guild_id = :guild AND erased.pixel_digest = mine.pixel_digest"
        " WHERE mine.job_id = :job)",
        {"job": job_id, "guild": guild_id},
    ) as cursor:
        row = await cursor.fetchone()
    return bool(row and row[0])


async def images_of(conn: aiosqlite.Connection, job_id: str) -> list[ImageRecord]:
    async with conn.execute(
        "SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,)
    ) as cursor:
        return [ImageRecord(**dict(row)) for row in await cursor.fetchall()]


async def unfinished_outside(
    conn: aiosqlite.Connection, guild_id: int, channel_ids: Collection[int]
) -> int:
    """How many of the guild's jobs are queued or running in a channel not among
    ``channel_ids``, or in a thread of one not among them: those an allowed-channels list of
    them ends unposted. A thread's job journaled before 0041 (its channel not recorded) is
    counted."""
    rows = await conn.execute_fetchall(
        "SELECT COUNT(*) FROM jobs WHERE guild_id = ?"
        " AND status IN ('queued', 'running') AND NOT EXISTS"
        " (SELECT 1 FROM json_each(?) WHERE value IN (channel_id, thread_parent_id))",
        (guild_id, json.dumps(sorted(channel_ids))),
    )
    return int(next(iter(rows))[0])


async def running_in(conn: aiosqlite.Connection, guild_id: int) -> list[JobRecord]:
    """The guild's jobs rendering (running), in the order they were submitted: those a list
    narrowed now may leave out, stopped rather than rendered to be withheld."""
    async with conn.execute(
        "SELECT * FROM jobs WHERE guild_id = ? AND status = 'running' ORDER BY created_at, rowid",
        (guild_id,),
    ) as cursor:
        return [_job(row) for row in await cursor.fetchall()]


async def unfinished_requests_in(
    conn: aiosqlite.Connection, guild_id: int
) -> list[tuple[str, str]]:
    """The guild's jobs queued or running, each id with its journaled request's JSON."""
    rows = await conn.execute_fetchall(
        "SELECT id, request_json FROM jobs WHERE guild_id = ?"
        " AND status IN ('queued', 'running') ORDER BY created_at, rowid",
        (guild_id,),
    )
    return [(str(job_id), str(request_json)) for job_id, request_json in rows]
