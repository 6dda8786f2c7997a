"""Acknowledge first: work that follows an acknowledgement waits while commands received
before it are still unanswered, for a short, bounded time.

Discord fails an interaction that has no answer within 3 s; nothing after the answer has a
deadline. In a burst, the work each command does once deferred (journal, queue, the "queued"
edit) runs on the event loop and the database thread between the acknowledgements of the
commands behind it, so the last one waits for all the others' work. With this gate that
work runs after them instead.

The gate is global, not per server: every server's commands share the one event loop's CPU,
so any server's unanswered command is held up by any server's work. The wait covers every
command received before ``earlier_answered`` is called (after the caller's own defer), so a
command received after the caller but before that call holds it too. A command still
unanswered ``ack_target_s`` after its receipt holds nobody any more (one member's slow prompt
plan must not hold everyone's work): so no wait lasts longer than ``ack_target_s``.

Pure asyncio: the composition root tells it of each command as it arrives (``received``) and
of each first answer Discord took or refused for good (``answered``, from the HTTP trace).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# The acknowledgement goal is p99 300 ms from the interaction's creation (docs/performance.md),
# and the bot receives it after that: a command unanswered 0.3 s after its receipt has missed
# the goal, so holding other work for it gains nothing and only delays that work.
ACK_TARGET_S = 0.3


class AcknowledgeFirst:
    """Counts the commands received and not yet answered, in arrival order."""

    def __init__(
        self,
        *,
        ack_target_s: float = ACK_TARGET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ack_target_s = ack_target_s
        self._clock = clock
        self._arrivals = 0  # commands received so far: the next one's number
        self._unanswered: dict[int, int] = {}  # interaction id -> its arrival number
        # (arrival number, interaction id, received at), oldest first; answered or forgotten
        # ones are dropped once they reach the front.
        self._in_arrival_order: deque[tuple[int, int, float]] = deque()
        # (arrivals before it, its future): released once none of those holds it.
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        # Releases the waiters once the oldest command that holds them passes its target.
        self._past_target: asyncio.TimerHandle | None = None

    @property
    def unanswered(self) -> int:
        """Commands still unanswered and within their target, as of the latest look."""
        return len(self._unanswered)

    def received(self, interaction_id: int) -> None:
        self._unanswered[interaction_id] = self._arrivals
        self._in_arrival_order.append((self._arrivals, interaction_id, self._clock()))
        self._arrivals += 1

    def answered(self, interaction_id: int) -> None:
        """Discord took (or refused for good) the interaction's first answer; any id is
        accepted."""
        if self._unanswered.pop(interaction_id, None) is not None:
            self._release()

    async def earlier_answered(self) -> None:
        """Return once every command received before this call was answered or is
        ``ack_target_s`` past its receipt (so after ``ack_target_s`` at most)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((self._arrivals, future))
        self._release()
        await future  # at once when it is already settled

    def _oldest_holding(self) -> tuple[int, float] | None:
        """The arrival number and receipt time of the oldest command still unanswered and
        within its target; older unanswered ones are forgotten."""
        order = self._in_arrival_order
        past_target = self._clock() - self._ack_target_s
        while order:
            number, interaction_id, received_at = order[0]
            if interaction_id in self._unanswered and received_at > past_target:
                return number, received_at
            order.popleft()
            if received_at <= past_target:
                self._unanswered.pop(interaction_id, None)
        return None

    def _release(self) -> None:
        """Settle the waiters nothing holds any more (a cancelled one included) and look
        again when the oldest command still holding one passes its target."""
        oldest = self._oldest_holding()
        waiting = self._waiting
        while waiting and (oldest is None or waiting[0][0] <= oldest[0] or waiting[0][1].done()):
            _settle(waiting.popleft()[1])
        if self._past_target is not None:
            self._past_target.cancel()
            self._past_target = None
        if waiting and oldest is not None:
            delay = oldest[1] + self._ack_target_s - self._clock()
            self._past_target = asyncio.get_running_loop().call_later(delay, self._release)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
