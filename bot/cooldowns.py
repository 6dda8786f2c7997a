"""A per-member cooldown for commands whose work grows with what the member stored (pure: no
discord). Kept in memory: a restart forgets it, so a member may run such a command once more
right after one (the cost of one more run, not a loop)."""

from __future__ import annotations

import time
from collections.abc import Callable


class MemberCooldown:
    """Lets a member run once per ``period_s``; a run's period starts when it is claimed, so
    two runs at once are one run and one refusal. Measured on the monotonic clock: a step of
    the host's wall clock neither lengthens nor ends a period."""

    def __init__(
        self,
        period_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._period_s = period_s
        self._monotonic = monotonic
        self._wall_clock = wall_clock  # only to say when a period ends, as a date
        self._ends: dict[int, float] = {}  # member id -> when they may run again (monotonic)

    def claim(self, member_id: int) -> float | None:
        """Start the member's period now and return None; while one runs, return when it
        ends (a Unix time: the wall clock of now plus what is left of it) and start nothing."""
        now = self._monotonic()
        # Only members inside their period are kept: the table stays as small as they are.
        self._ends = {member: end for member, end in self._ends.items() if end > now}
        if (end := self._ends.get(member_id)) is not None:
            return self._wall_clock() + (end - now)
        self._ends[member_id] = now + self._period_s
        return None

    def release(self, member_id: int) -> None:
        """Forget the member's period: the run that claimed it did nothing (it failed)."""
        self._ends.pop(member_id, None)
