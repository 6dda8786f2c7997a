"""How many jobs a member may have waiting or running in one server (pure).

A quota limits what a member spends, not what they queue: without an image limit (quota off,
unlimited, a server's admins) one member could queue thousands of jobs, each a journal row,
its uploads on disk and work for every scheduling pass. ``EASEL_MAX_QUEUED_PER_MEMBER``
bounds that instead, for everyone; direct messages count as a server of their own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueBoundRefusal:
    """Why a request is not queued: the member's jobs waiting or running would pass the bound;
    ``message`` is ready to show the member."""

    bound: int
    waiting: int  # the member's jobs already waiting or running here
    asked: int  # the jobs this request makes (``--repeat``: one per seed)

    @property
    def message(self) -> str:
        also = "" if self.asked == 1 else f", and this request makes {self.asked}"
        return (
            f"Not queued: you may have at most {self.bound} jobs waiting or running here, "
            f"and you have {self.waiting}{also}. Wait for some to finish, or `/cancel` one."
        )


def check_queue_bound(bound: int, waiting: int, asked: int) -> QueueBoundRefusal | None:
    """None when ``asked`` more jobs fit beside the member's ``waiting`` ones under ``bound``
    (0: no bound)."""
    if bound and waiting + asked > bound:
        return QueueBoundRefusal(bound, waiting, asked)
    return None
