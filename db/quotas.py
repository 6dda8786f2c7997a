"""The quota ledger and the limit overrides (tables from ``0002_quota_ledger.sql``).

A job's cost is reserved when it is accepted, then either committed with the measured GPU time
or refunded (failure, cancel). ``UNIQUE (job_id, kind)`` makes every step idempotent, so a
restart or a redelivered message can repeat it without charging twice.

Every function here is one SQL statement (plus, on a no-op, a read to explain it), so it is
atomic on its own and can also run inside a caller's ``transaction(conn)`` (for instance
"check usage, reserve, journal the job" as one unit); on its own, a write waits for another
process's lock between tries (``db.database.write``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from db.database import write, write_returning

__all__ = [
    "LIMIT_COLUMNS",
    "LedgerError",
    "LimitOverrides",
    "LimitScope",
    "NoReservation",
    "StoredOverride",
    "Usage",
    "WithheldRefund",
    "anonymise_due",
    "anonymise_user",
    "clear_limits",
    "commit",
    "get_limits",
    "overrides_for",
    "overrides_in",
    "prune_settled",
    "refund",
    "refund_withheld",
    "refunded",
    "reserve",
    "reserved_gpu_seconds",
    "set_limits",
    "usage",
    "usage_since_each",
]

# The limit columns of quota_limits; bot.policy.quota.QuotaLimits has exactly these fields.
LIMIT_COLUMNS = (
    "images_per_day",
    "images_per_week",
    "images_per_month",
    "gpu_seconds_per_day",
    "gpu_seconds_per_week",
    "gpu_seconds_per_month",
)

Limits = dict[str, float | None]

_PAST = {"commit": "committed", "refund": "refunded"}
# A reservation at no cost (a relax job): its commit charges nothing either.
_RESERVED_FREE = "images = 0 AND gpu_seconds = 0"


class LedgerError(Exception):
    """A ledger step that contradicts an earlier one (commit after refund, or the reverse)."""


class NoReservation(LedgerError):
    """A commit or refund of a job the ledger holds no reservation of."""


class LimitScope(StrEnum):
    GUILD = "guild"  # the guild's default; subject_id is the guild id
    ROLE = "role"
    USER = "user"


@dataclass(frozen=True)
class Usage:
    images: int
    gpu_seconds: float


@dataclass(frozen=True)
class LimitOverrides:
    """Everything stored that bears on one user's limits in one guild (None: no override)."""

    user: Limits | None
    roles: list[Limits]
    guild: Limits | None


@dataclass(frozen=True)
class StoredOverride:
    """One limit override a guild stores: its default (subject: the guild), a role's or a
    member's."""

    scope: LimitScope
    subject_id: int
    limits: Limits


async def reserve(
    conn: aiosqlite.Connection,
    job_id: str,
    user_id: int,
    guild_id: int | None,
    images: int,
    est_gpu_s: float,
    now: float,
) -> bool:
    """Hold ``images`` and ``est_gpu_s`` for the job; False if it was already reserved."""
    if images < 0 or est_gpu_s < 0:
        raise ValueError(
            f"job {job_id}: images and est_gpu_s must be 0 or more, got {images}, {est_gpu_s}"
        )
    cursor = await write(
        conn,
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " VALUES (?, 'reserve', ?, ?, ?, ?, ?) ON CONFLICT (job_id, kind) DO NOTHING",
        (job_id, user_id, guild_id, images, est_gpu_s, now),
    )
    return cursor.rowcount == 1


async def reserved_gpu_seconds(
    conn: aiosqlite.Connection, job_ids: Collection[str]
) -> dict[str, float]:
    """The GPU seconds reserved for each of ``job_ids`` (its reserve row, as ``reserve``
    wrote it); a job with no reserve row has none. One read, on the ledger's (job_id, kind)
    key, however many jobs."""
    if not job_ids:
        return {}
    rows = await conn.execute_fetchall(
        "SELECT job_id, gpu_seconds FROM quota_ledger WHERE kind = 'reserve'"
        " AND job_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(job_ids))),),
    )
    return {str(job_id): float(gpu_seconds) for job_id, gpu_seconds in rows}


async def commit(
    conn: aiosqlite.Connection,
    job_id: str,
    measured_gpu_s: float,
    now: float,
    *,
    images: int | None = None,
) -> Usage | None:
    """Charge the measured cost in place of the estimate (``images`` defaults to the reserved
    count) and return what was charged; None if already committed. A job reserved at no cost
    (a relax job) is charged nothing. Raises LedgerError if refunded or never reserved."""
    if measured_gpu_s < 0 or (images is not None and images < 0):
        raise ValueError(
            f"job {job_id}: measured_gpu_s and images must be 0 or more, "
            f"got {measured_gpu_s}, {images}"
        )
    committed = await write_returning(
        conn,
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " SELECT job_id, 'commit', user_id, guild_id,"
        f" CASE WHEN {_RESERVED_FREE} THEN 0 ELSE COALESCE(?, images) END,"
        f" CASE WHEN {_RESERVED_FREE} THEN 0 ELSE ? END, ?"
        " FROM quota_ledger WHERE job_id = ? AND kind = 'reserve' AND NOT EXISTS"
        " (SELECT 1 FROM quota_ledger WHERE job_id = ? AND kind = 'refund')"
        " ON CONFLICT (job_id, kind) DO NOTHING RETURNING images, gpu_seconds",
        (images, measured_gpu_s, now, job_id, job_id),
    )
    row = next(iter(committed), None)
    if row is not None:
        return Usage(images=int(row[0]), gpu_seconds=float(row[1]))
    await _explain_no_op(conn, job_id, done="commit", contradicting="refund")  # or raises
    return None


async def refund(conn: aiosqlite.Connection, job_id: str, now: float) -> bool:
    """Release the job's reservation; False if already refunded. Raises LedgerError if the
    job was committed (its cost is final, but for ``refund_withheld``) or never reserved."""
    cursor = await write(
        conn,
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " SELECT job_id, 'refund', user_id, guild_id, images, gpu_seconds, ?"
        " FROM quota_ledger WHERE job_id = ? AND kind = 'reserve' AND NOT EXISTS"
        " (SELECT 1 FROM quota_ledger WHERE job_id = ? AND kind = 'commit')"
        " ON CONFLICT (job_id, kind) DO NOTHING",
        (now, job_id, job_id),
    )
    if cursor.rowcount == 1:
        return True
    return await _explain_no_op(conn, job_id, done="refund", contradicting="commit")


@dataclass(frozen=True)
class WithheldRefund:
    """Whose spending a ``refund_withheld`` gave back, and whether that call did (False: an
    earlier one)."""

    user_id: int
    guild_id: int | None
    now: bool


async def refund_withheld(
    conn: aiosqlite.Connection, job_id: str, now: float
) -> WithheldRefund | None:
    """Refund a job whose result is withheld for a reason not its maker's (the server's rules
    changed after it was admitted), committed or not: a refund row makes every quota count it
    as nothing (``COUNTED_RESERVATIONS``), its commit included. The one exception to a
    commit's being final, and idempotent like the rest (one refund a job): a delivery retried
    at the next start refunds nothing more. None: nothing reserved to refund (pruned)."""
    refunded = await write_returning(
        conn,
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " SELECT job_id, 'refund', user_id, guild_id, images, gpu_seconds, ?"
        " FROM quota_ledger WHERE job_id = ? AND kind = 'reserve'"
        " ON CONFLICT (job_id, kind) DO NOTHING RETURNING user_id, guild_id",
        (now, job_id),
    )
    row = next(iter(refunded), None)
    if row is not None:
        return WithheldRefund(user_id=int(row[0]), guild_id=row[1], now=True)
    earlier = await _refund_of(conn, job_id)
    return None if earlier is None else WithheldRefund(*earlier, now=False)


async def refunded(conn: aiosqlite.Connection, job_id: str) -> bool:
    """Whether the job's quota was given back (by ``refund`` or ``refund_withheld``)."""
    return await _refund_of(conn, job_id) is not None


async def _refund_of(conn: aiosqlite.Connection, job_id: str) -> tuple[int, int | None] | None:
    """Whose the job's refund was (user and guild ids); None when it was not refunded."""
    rows = await conn.execute_fetchall(
        "SELECT user_id, guild_id FROM quota_ledger WHERE job_id = ? AND kind = 'refund'",
        (job_id,),
    )
    row = next(iter(rows), None)
    return None if row is None else (int(row[0]), row[1])


async def _explain_no_op(
    conn: aiosqlite.Connection, job_id: str, *, done: str, contradicting: str
) -> bool:
    # A job's rows are removed only once it is settled (``prune_settled``), so this read cannot
    # disagree with the insert that just did nothing.
    async with conn.execute("SELECT kind FROM quota_ledger WHERE job_id = ?", (job_id,)) as cursor:
        kinds = {row[0] for row in await cursor.fetchall()}
    if done in kinds:
        return False
    if contradicting in kinds:
        raise LedgerError(
            f"job {job_id} was already {_PAST[contradicting]}; it cannot be {_PAST[done]}"
        )
    raise NoReservation(f"job {job_id} has no reservation to {done}")


async def usage(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None, since: float
) -> Usage:
    """What the user has spent in the guild (None: DMs) on jobs reserved at or after ``since``:
    committed costs plus reservations still outstanding. A job counts in the period it was
    reserved in, even if it finished after the period ended."""
    [spent] = await usage_since_each(conn, user_id, guild_id, [since])
    return spent


# The reservations a quota counts, as ``r`` with its commit ``c`` (if any): a committed job
# costs what was measured (``COALESCE(c.x, r.x)``), an outstanding one what was reserved, a
# refunded one nothing. Callers add ``AND`` conditions on ``r``.
COUNTED_RESERVATIONS = (
    "FROM quota_ledger AS r"
    " LEFT JOIN quota_ledger AS c ON c.job_id = r.job_id AND c.kind = 'commit'"
    " WHERE r.kind = 'reserve' AND NOT EXISTS"
    " (SELECT 1 FROM quota_ledger AS f WHERE f.job_id = r.job_id AND f.kind = 'refund')"
)


async def usage_since_each(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None, starts: Sequence[float]
) -> list[Usage]:
    """``usage`` for several period starts at once, in one query (one per start would be a
    database round trip each, on the path that answers a slash command)."""
    per_start = ", ".join(
        "COALESCE(SUM(CASE WHEN r.at >= ? THEN COALESCE(c.images, r.images) END), 0),"
        " COALESCE(SUM(CASE WHEN r.at >= ? THEN COALESCE(c.gpu_seconds, r.gpu_seconds) END), 0.0)"
        for _ in starts
    )
    # One trip to the database thread, as in ``overrides_for``.
    [row] = await conn.execute_fetchall(
        f"SELECT {per_start} {COUNTED_RESERVATIONS}"
        " AND r.user_id = ? AND r.guild_id IS ? AND r.at >= ?",
        (*(start for start in starts for _ in range(2)), user_id, guild_id, min(starts)),
    )
    return [
        Usage(images=int(row[2 * index]), gpu_seconds=float(row[2 * index + 1]))
        for index in range(len(starts))
    ]


async def spenders_since(
    conn: aiosqlite.Connection, since: float, page: int
) -> AsyncIterator[list[tuple[tuple[int, int | None], float]]]:
    """Every (user, guild) with a reservation at ``since`` or later, refunded or not (so a
    few too many), with the time of their latest one: those not among them have spent
    nothing since then, and those whose latest is older than a later time nothing since
    that. In pages of at most ``page``, each its own query resuming after the last pair:
    another read waits on one page, not on all of them (aiosqlite runs one statement at a
    time per connection)."""
    # Read from the (user, guild, kind, at) index alone, in its order: SQLite's own choice,
    # the (kind, at) index, looks up every row of the window and sorts them (600,000
    # reservations of 100,000 members: 2.1 s against 0.2 s, docs/performance.md). A guild of
    # None (a direct message) sorts first, as -1 (guild ids are positive).
    after_user, after_guild = -1, -1
    while True:
        rows = await conn.execute_fetchall(
            "SELECT user_id, guild_id, MAX(at) FROM quota_ledger INDEXED BY quota_ledger_usage"
            " WHERE user_id >= :user AND (user_id > :user OR coalesce(guild_id, -1) > :guild)"
            " AND kind = 'reserve' AND at >= :since GROUP BY user_id, guild_id"
            " ORDER BY user_id, guild_id LIMIT :page",
            {"user": after_user, "guild": after_guild, "since": since, "page": page},
        )
        found = [
            ((int(row[0]), None if row[1] is None else int(row[1])), float(row[2])) for row in rows
        ]
        if found:
            yield found
        if len(found) < page:
            return
        (after_user, last_guild), _latest = found[-1]
        after_guild = -1 if last_guild is None else last_guild


async def guilds_with_limits(conn: aiosqlite.Connection) -> set[int]:
    """Every guild that stores a limit override (its default, a role's or a member's)."""
    rows = await conn.execute_fetchall("SELECT DISTINCT guild_id FROM quota_limits")
    return {int(row[0]) for row in rows}


async def set_limits(
    conn: aiosqlite.Connection,
    scope: LimitScope,
    guild_id: int,
    subject_id: int,
    limits: Mapping[str, float | None],
    now: float,
) -> None:
    """Store an override; a limit missing from ``limits`` or None is unlimited at this level."""
    unknown = sorted(set(limits) - set(LIMIT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown quota limits {unknown}; known: {list(LIMIT_COLUMNS)}")
    values = [limits.get(column) for column in LIMIT_COLUMNS]
    for column, value in zip(LIMIT_COLUMNS, values, strict=True):
        if value is not None and value < 0:
            raise ValueError(f"{column} must be 0 or more (or None for unlimited), got {value}")
    columns = ", ".join(LIMIT_COLUMNS)
    placeholders = ", ".join("?" for _ in LIMIT_COLUMNS)
    updates = ", ".join(f"{column} = excluded.{column}" for column in LIMIT_COLUMNS)
    await write(
        conn,
        f"INSERT INTO quota_limits (scope, guild_id, subject_id, {columns}, updated_at)"
        f" VALUES (?, ?, ?, {placeholders}, ?)"
        f" ON CONFLICT (scope, guild_id, subject_id) DO UPDATE SET {updates},"
        " updated_at = excluded.updated_at",
        (scope.value, guild_id, subject_id, *values, now),
    )


async def clear_limits(
    conn: aiosqlite.Connection, scope: LimitScope, guild_id: int, subject_id: int
) -> bool:
    """Remove an override (the next level applies again); False if there was none."""
    cursor = await write(
        conn,
        "DELETE FROM quota_limits WHERE scope = ? AND guild_id = ? AND subject_id = ?",
        (scope.value, guild_id, subject_id),
    )
    return cursor.rowcount == 1


async def get_limits(
    conn: aiosqlite.Connection, scope: LimitScope, guild_id: int, subject_id: int
) -> Limits | None:
    async with conn.execute(
        f"SELECT {', '.join(LIMIT_COLUMNS)} FROM quota_limits"
        " WHERE scope = ? AND guild_id = ? AND subject_id = ?",
        (scope.value, guild_id, subject_id),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else _limits(row)


async def overrides_for(
    conn: aiosqlite.Connection, guild_id: int, user_id: int, role_ids: Iterable[int]
) -> LimitOverrides:
    """The user's, their roles' and the guild's overrides, ready for ``bot.policy.quota``."""
    roles = sorted(set(role_ids))
    role_marks = ", ".join("?" for _ in roles)
    # One trip to the database thread (execute, fetch and close would be three): read before
    # /imagine is acknowledged, once for each member new to the bot.
    rows = await conn.execute_fetchall(
        f"SELECT scope, {', '.join(LIMIT_COLUMNS)} FROM quota_limits WHERE guild_id = ? AND ("
        "(scope = 'user' AND subject_id = ?) OR (scope = 'guild' AND subject_id = ?)"
        f" OR (scope = 'role' AND subject_id IN ({role_marks})))"
        " ORDER BY subject_id",
        (guild_id, user_id, guild_id, *roles),
    )
    by_scope: dict[str, list[Limits]] = {scope.value: [] for scope in LimitScope}
    for row in rows:
        by_scope[row[0]].append(_limits(row[1:]))
    user = by_scope[LimitScope.USER.value]
    guild = by_scope[LimitScope.GUILD.value]
    return LimitOverrides(
        user=user[0] if user else None,
        roles=by_scope[LimitScope.ROLE.value],
        guild=guild[0] if guild else None,
    )


async def overrides_in(conn: aiosqlite.Connection, guild_id: int) -> list[StoredOverride]:
    """Every override the guild stores: its default first, then roles', then members'."""
    rows = await conn.execute_fetchall(
        f"SELECT scope, subject_id, {', '.join(LIMIT_COLUMNS)} FROM quota_limits"
        " WHERE guild_id = ?"
        " ORDER BY CASE scope WHEN 'guild' THEN 0 WHEN 'role' THEN 1 ELSE 2 END, subject_id",
        (guild_id,),
    )
    return [StoredOverride(LimitScope(row[0]), int(row[1]), _limits(row[2:])) for row in rows]


def _limits(row: Iterable[object]) -> Limits:
    values: Limits = {}
    for column, value in zip(LIMIT_COLUMNS, row, strict=True):
        if value is not None and not isinstance(value, int | float):
            raise TypeError(f"quota_limits.{column} holds {value!r}, not a number")
        values[column] = value
    return values


# /forget-me erases the member's jobs before their ledger rows: those left are jobs started
# during it, which name the member, and so do their rows.
_NOT_OF_KEPT_JOBS = " AND job_id NOT IN (SELECT id FROM jobs WHERE user_id = :member)"


async def anonymise_user(
    conn: aiosqlite.Connection, user_id: int, *, counted_since: float, at_most: int
) -> int:
    """Up to ``at_most`` of the member's ledger rows lose their id (user_id 0, never a Discord
    id; amounts, guild and times stay for the server's accounting); returns how many. Rows of
    jobs reserved at or after ``counted_since`` still count towards the member's current
    limits: they keep the id (``defer_anonymising``), or forgetting oneself would give quota
    back. Rows of a job the member still has (one started during /forget-me) stay with it.
    The caller repeats it, each in its own transaction, until fewer go
    (``db.history.erase_user``): a member's rows of years are many."""
    # ``+kind``, ``+at``: the member's rows by quota_ledger_usage; on quota_ledger_at SQLite
    # would read every member's reservations of the month (a second at 600,000 jobs).
    cursor = await conn.execute(
        "UPDATE quota_ledger SET user_id = 0, anonymise_at = NULL WHERE rowid IN ("
        f"SELECT rowid FROM quota_ledger WHERE user_id = :member{_NOT_OF_KEPT_JOBS}"
        " AND job_id NOT IN (SELECT job_id FROM quota_ledger"
        " WHERE +kind = 'reserve' AND user_id = :member AND +at >= :since) LIMIT :at_most)",
        {"member": user_id, "since": counted_since, "at_most": at_most},
    )
    return cursor.rowcount


async def defer_anonymising(conn: aiosqlite.Connection, user_id: int, anonymise_at: float) -> int:
    """The member's rows ``anonymise_user`` left (those their current quota periods count, not
    those of a job the member still has) lose their id at ``anonymise_at``
    (``anonymise_due``); returns how many."""
    cursor = await conn.execute(
        f"UPDATE quota_ledger SET anonymise_at = :at WHERE user_id = :member{_NOT_OF_KEPT_JOBS}",
        {"at": anonymise_at, "member": user_id},
    )
    return cursor.rowcount


async def anonymise_due(conn: aiosqlite.Connection, now: float) -> int:
    """Anonymise the ledger rows /forget-me left named until their quota periods ended."""
    cursor = await write(
        conn,
        "UPDATE quota_ledger SET user_id = 0, anonymise_at = NULL WHERE anonymise_at <= ?",
        (now,),
    )
    return cursor.rowcount


async def prune_settled(conn: aiosqlite.Connection, reserved_before: float) -> int:
    """Delete the rows of jobs reserved before ``reserved_before`` whose cost is settled
    (committed or refunded); returns how many rows. The caller passes a time no quota period
    still counts (see ``bot.jobs.retention``); an unsettled reservation is always kept."""
    cursor = await write(
        conn,
        "DELETE FROM quota_ledger WHERE job_id IN ("
        "SELECT r.job_id FROM quota_ledger AS r WHERE r.kind = 'reserve' AND r.at < ?"
        " AND EXISTS (SELECT 1 FROM quota_ledger AS s"
        " WHERE s.job_id = r.job_id AND s.kind IN ('commit', 'refund')))",
        (reserved_before,),
    )
    return cursor.rowcount
