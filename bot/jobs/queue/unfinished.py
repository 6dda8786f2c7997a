"""Each member's jobs waiting or running in each server, and the pictures they ask for, kept in
memory by the queue, so the queue bound (``bot.policy.queue_bound``) and a ``--relax``
request's caps (``bot.policy.quota.check_relax``) are checked before an interaction is
acknowledged without a read of SQLite (issue 12).

Advisory, like the quota's figures in memory (``bot.jobs.accounting``): a refusal is confirmed
in SQLite first, and ``accounting.admit`` checks the bound and the caps again in the
transaction that reserves. Kept by job id, so a job counted twice (a submit seen at the
start's replay too) or ended twice counts once."""

from __future__ import annotations

from collections.abc import Iterable

from bot.jobs.accounting import UsageKey
from bot.policy.quota import Unfinished


class UnfinishedJobs:
    def __init__(self) -> None:
        self._job: dict[str, tuple[UsageKey, int]] = {}  # its member, its pictures
        self._jobs_of: dict[UsageKey, set[str]] = {}

    def of(self, member: UsageKey) -> Unfinished:
        """``member``'s (user, guild; None: direct messages) unfinished jobs, and their
        pictures."""
        jobs = self._jobs_of.get(member, ())
        return Unfinished(len(jobs), sum(self._job[job_id][1] for job_id in jobs))

    def add(self, job_id: str, member: UsageKey, pictures: int) -> None:
        """``job_id`` of ``member``, asking for ``pictures``, is journaled unfinished
        (submitted, or found at a start)."""
        self._job[job_id] = (member, pictures)
        self._jobs_of.setdefault(member, set()).add(job_id)

    def ended(self, job_id: str) -> None:
        """``job_id``'s end is journaled (done, failed, cancelled, withheld at its start)."""
        found = self._job.pop(job_id, None)
        if found is not None:
            member = found[0]
            jobs = self._jobs_of[member]
            jobs.discard(job_id)
            if not jobs:
                del self._jobs_of[member]

    def found(self, member: UsageKey, jobs: Iterable[tuple[str, int]]) -> None:
        """SQLite says ``member``'s unfinished jobs are ``jobs`` (each id with its pictures):
        they replace what memory held (it missed an end, or a job)."""
        for job_id in self._jobs_of.pop(member, set()):
            del self._job[job_id]
        for job_id, pictures in jobs:
            self.add(job_id, member, pictures)
