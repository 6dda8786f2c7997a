"""A member banned from a server: Easel stops making pictures for them there.

Discord's ban (even with its message purge) leaves the queue alone: a raider's queued jobs
would go on rendering and posting in the server for minutes. Their unfinished jobs in that
server are cancelled, nothing charged (queued ones refunded, running ones stopped at their next
step and refunded whole: the member did not choose the stop); their jobs in other servers and
in direct messages stay. Work of theirs
still under way when the ban comes (a ``--repeat``'s later jobs, a Vary (Region) mask found in
words) queues nothing more (``RecentBans``). What Easel already posted for them stays for the
server's moderators to remove (Delete, or deleting the post, which withdraws the job:
``cogs.withdrawals``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiosqlite

from bot.history import History
from bot.jobs import accounting
from bot.jobs.queue import CancelOutcome, JobQueue
from bot.memo import ExpiringKeys
from db import guild_settings as settings_audit

log = logging.getLogger(__name__)

# How the server's audit (/easel-admin audit) names it: Easel made the change, its value
# names the banned member and the jobs.
AUDITED_AS = "jobs cancelled (member banned)"
# A ban's stop is imposed, so never charged: STOPPING_FREE.
_ENDED_BY_THE_BAN = frozenset({CancelOutcome.CANCELLED, CancelOutcome.STOPPING_FREE})


class RecentBans:
    """The (server, member) pairs banned while Easel ran, for the work that outlives the ban's
    cancels: what a member's command does after its acknowledgement (a ``--repeat``'s later
    jobs, planned one after the other; a Vary (Region) mask found in words) ends within
    seconds, so an hour is ample, and a raid of many bans keeps at most ``capacity`` of them
    (the oldest go first). An unban forgets the pair. Not stored: a restart forgets them, and
    work under way when the ban came ended with the process."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._banned: ExpiringKeys[tuple[int, int]] = ExpiringKeys(ttl_s, capacity)

    def add(self, guild_id: int, user_id: int) -> None:
        self._banned.add((guild_id, user_id), self._clock())

    def forget(self, guild_id: int, user_id: int) -> None:
        self._banned.discard((guild_id, user_id))

    def holds(self, guild_id: int | None, user_id: int) -> bool:
        """Whether the member was banned from ``guild_id`` within the hour (a DM: never)."""
        return guild_id is not None and self._banned.holds((guild_id, user_id), self._clock())


class BannedMembers:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        queue: JobQueue,
        history: History,
        recent: RecentBans,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._queue = queue
        self._history = history
        self._recent = recent
        self._clock = clock

    async def cancel_jobs(self, guild_id: int, user_id: int, *, easel_id: int) -> list[str]:
        """Cancel the member's queued and running jobs in ``guild_id``, audited there as done
        by Easel (``easel_id``, the bot's own user); the ids cancelled (a job that ended
        meanwhile is not among them)."""
        # First, before any await: a submission that journals after this is cancelled by its
        # submitter (cogs.common), one journaled before is among ``unfinished``.
        self._recent.add(guild_id, user_id)
        unfinished = await self._history.unfinished(user_id, guild_id=guild_id)
        owner = accounting.Member(user_id, guild_id)
        # All at once: each cancel tells its job's maker (a REST call, rate-limited per
        # channel), and a running job waiting behind those would finish and post meanwhile.
        outcomes = await asyncio.gather(
            *(self._queue.cancel(line.job_id, owner, imposed=True) for line in unfinished)
        )
        cancelled = [
            line.job_id
            for line, outcome in zip(unfinished, outcomes, strict=True)
            if outcome in _ENDED_BY_THE_BAN
        ]
        if cancelled:
            await settings_audit.record_change(
                self._conn,
                guild_id,
                easel_id,
                AUDITED_AS,
                f"<@{user_id}>: {', '.join(cancelled)}",
                self._clock(),
            )
            log.info(
                "member banned in guild %s: %d unfinished job(s) cancelled (%s)",
                guild_id,
                len(cancelled),
                ", ".join(cancelled),
            )
        return cancelled

    def unbanned(self, guild_id: int, user_id: int) -> None:
        """An unbanned member who joins again may have pictures made there at once."""
        self._recent.forget(guild_id, user_id)
