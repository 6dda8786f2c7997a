"""What the bot owes the broker of ended jobs: each one's stored result made a bare marker of
its outcome, the pictures it named deleted, and a cancelled job's message deleted from the
jobs stream (``JobCopies.settle``, then ``drop_job_messages`` once a round for all of them).

Each chore is recorded in the transaction of its job's end (``db.broker_chores``, written by
``JobEnds``) and removed once the broker did it: a broker away when the job ended, or a stop
of Easel before it answers again, leaves the chore for later rather than the member's prompt
and pictures on the broker for a day (nor a cancelled job to render). ``BrokerChores`` does
them at the queue's start, as each job ends, once a broker away answers again (asked with
backoff, as is a database that refused a round), and a chore the broker refuses after a wait,
a bounded number of times."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from bot.jobs.queue.slots import JobCopies
from db import broker_chores
from db.broker_chores import OwedChore

log = logging.getLogger(__name__)

# A chore the broker refuses although it answers (a right missing, a bug) is tried again after
# the first wait, then after each wait doubled up to the last, this many times in all (over
# about 11 minutes): then given up, its copies left to expire.
REFUSED_RETRY_WAITS_S = (5.0, 600.0)
CHORE_TRIES = 8


@dataclass
class _Refused:
    tries: int
    wait_s: float  # before the next try
    retry_at: float  # on the event loop's clock


class BrokerChores:
    """Does the broker chores of ended jobs, from ``start`` until ``stop``. ``probe_waits_s``:
    the first and the longest wait between two asks whether a broker away answers again."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        copies: JobCopies,
        clock: Callable[[], float],
        probe_waits_s: tuple[float, float],
    ) -> None:
        self._conn = conn
        self._copies = copies
        self._clock = clock
        self._probe_waits_s = probe_waits_s
        self._task: asyncio.Task[None] | None = None
        self._refused: dict[str, _Refused] = {}
        # Set by a job's end, and by ``stop``.
        self._owed = asyncio.Event()
        self._stopping = asyncio.Event()
        # The broker did not answer at the last ask: said once, and once again when it does.
        self._away = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="easel-broker-chores")

    def owed(self) -> None:
        """A job's end recorded its chore: done now, in ``start``'s task."""
        self._owed.set()

    async def stop(self, grace_s: float) -> None:
        """Do the chores owed once more (those of the jobs that ended just before the stop,
        or during a round under way), unless the broker is away, for ``grace_s`` at most;
        what is left waits for the next start."""
        if self._task is None:
            return
        self._stopping.set()
        self._owed.set()  # ends its wait
        _, unfinished = await asyncio.wait([self._task], timeout=grace_s)
        for task in unfinished:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        """Do the chores owed, then again whenever a job ends, a refused one's wait is over,
        or (the broker away, or the database refusing) at the next probe, until ``stop``."""
        loop = asyncio.get_running_loop()
        first_probe_s, longest_probe_s = self._probe_waits_s
        probe_s = first_probe_s
        while True:
            # A round begun before the stop may have missed ends recorded meanwhile: the
            # one after it is the last.
            last = self._stopping.is_set()
            self._owed.clear()
            try:
                answered = await self._round()
            except Exception:
                # A database that refused the read or a discharge: the chores are idempotent,
                # and tried again after the probe's wait, as for a broker away.
                log.exception("the broker chores of ended jobs failed")
                answered = False
            if self._stopping.is_set():
                if last or not answered:
                    return
                continue
            wait: float | None
            if answered:
                probe_s = first_probe_s
                retries = [refused.retry_at for refused in self._refused.values()]
                wait = max(0.0, min(retries) - loop.time()) if retries else None
            else:
                wait, probe_s = probe_s, min(2 * probe_s, longest_probe_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._owed.wait(), wait)

    async def _round(self) -> bool:
        """Each chore owed whose time has come; whether the broker answered. The messages of
        the cancelled jobs settled are looked for together, last: a read of the jobs stream
        where one may still be (``drop_job_messages``)."""
        chores = []
        for chore in await broker_chores.owed(self._conn):
            if self._clock() - chore.owed_since <= self._copies.kept_s:
                chores.append(chore)
                continue
            log.info("job %s: its copies on the broker expired before it answered", chore.job_id)
            await self._discharge(chore.job_id)
        if not chores:
            return True
        if not await self._answers(len(chores)):
            return False
        now = asyncio.get_running_loop().time()
        cancelled = []
        for chore in chores:
            refused = self._refused.get(chore.job_id)
            if refused is not None and refused.retry_at > now:
                continue
            try:
                await self._copies.settle(chore.job_id, chore.outcome)
            except Exception as error:
                if not await self._refused_now([chore], error, len(chores)):
                    return False
                continue
            if chore.outcome == "cancelled":
                cancelled.append(chore)
            else:
                await self._settled(chore)
        if cancelled:
            try:
                await self._copies.drop_job_messages([chore.job_id for chore in cancelled])
            except Exception as error:
                return await self._refused_now(cancelled, error, len(chores))
        for chore in cancelled:
            await self._settled(chore)
        return True

    async def _settled(self, chore: OwedChore) -> None:
        if chore.job_id in self._refused:
            log.info("job %s: its copies on the broker settled", chore.job_id)
        await self._discharge(chore.job_id)

    async def _refused_now(self, chores: list[OwedChore], error: Exception, owed: int) -> bool:
        """The broker raised ``error`` at ``chores``: whether it answers (it refused them,
        and each waits for its next try or is given up)."""
        if not await self._answers(owed):
            return False
        for chore in chores:
            if self._given_up(chore, error):
                await self._discharge(chore.job_id)
        return True

    async def _discharge(self, job_id: str) -> None:
        self._refused.pop(job_id, None)
        await broker_chores.discharge(self._conn, job_id)

    async def _answers(self, owed: int) -> bool:
        """Whether the broker answers now; a change from the last ask is logged."""
        try:
            answers = await self._copies.reachable()
        except Exception:
            log.exception("the broker's probe raised")
            answers = False
        if answers == self._away:
            self._away = not answers
            if self._away:
                log.warning(
                    "the broker does not answer: %d ended job(s) keep their copies there "
                    "(results, pictures, cancelled jobs' messages) until it does",
                    owed,
                )
            else:
                log.info("the broker answers again: the copies of ended jobs are settled")
        return answers

    def _given_up(self, chore: OwedChore, error: Exception) -> bool:
        """The broker answers but refused ``chore``: whether it is given up (its last try),
        else it waits for its next try."""
        refused = self._refused.get(chore.job_id)
        tries = 1 if refused is None else refused.tries + 1
        if tries >= CHORE_TRIES:
            log.error(
                "job %s: its copies on the broker were refused %d times (%s); given up, they "
                "expire on their own within a day (a jobs stream without an age limit keeps "
                "the message of a cancelled one: see the broker's warnings at start)",
                chore.job_id,
                tries,
                type(error).__name__,
            )
            return True
        if refused is None:
            log.warning(
                "job %s: its copies on the broker were not settled (%s); tried again later",
                chore.job_id,
                type(error).__name__,
            )
        first_s, longest_s = REFUSED_RETRY_WAITS_S
        wait_s = first_s if refused is None else min(2 * refused.wait_s, longest_s)
        retry_at = asyncio.get_running_loop().time() + wait_s
        self._refused[chore.job_id] = _Refused(tries, wait_s, retry_at)
        return False
