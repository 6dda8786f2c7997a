"""Each member's jobs waiting or running in each server, kept in memory by the queue, so the
queue bound (``bot.policy.queue_bound``) is checked before an interaction is acknowledged
without a read of SQLite (issue 12).

Advisory, like the quota's figures in memory (``bot.jobs.accounting``): a refusal is confirmed
in SQLite first, and ``accounting.admit`` checks the bound again in the transaction that
reserves. Kept by job id, so a job counted twice (a submit seen at the start's replay too) or
ended twice counts once."""

from __future__ import annotations

from collections.abc import Iterable

from bot.jobs.accounting import UsageKey


class UnfinishedJobs:
    def __init__(self) -> None:
        self._member_of: dict[str, UsageKey] = {}
        self._jobs_of: dict[UsageKey, set[str]] = {}

    def count(self, member: UsageKey) -> int:
        """How many of ``member``'s jobs (user, guild; None: direct messages) are unfinished."""
        return len(self._jobs_of.get(member, ()))

    def add(self, job_id: str, member: UsageKey) -> None:
        """``job_id`` of ``member`` is journaled unfinished (submitted, or found at a start)."""
        self._member_of[job_id] = member
        self._jobs_of.setdefault(member, set()).add(job_id)

    def ended(self, job_id: str) -> None:
        """``job_id``'s end is journaled (done, failed, cancelled, withheld at its start)."""
        member = self._member_of.pop(job_id, None)
        if member is not None:
            jobs = self._jobs_of[member]
            jobs.discard(job_id)
            if not jobs:
                del self._jobs_of[member]

    def found(self, member: UsageKey, job_ids: Iterable[str]) -> None:
        """SQLite says ``member``'s unfinished jobs are ``job_ids``: they replace what memory
        held (it missed an end, or a job)."""
        for job_id in self._jobs_of.pop(member, set()):
            del self._member_of[job_id]
        for job_id in job_ids:
            self.add(job_id, member)
