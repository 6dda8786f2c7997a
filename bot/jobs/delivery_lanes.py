"""Results posted in the order they were asked for, one member's in one channel at a time.

The scope is a lane: one member in one channel (of a server, or their direct messages). In a
lane, results post one after another, the earliest submitted (``created_at``, then the order
they were journaled in) first
among those waiting: a batch's jobs, a member's ``--repeat`` jobs, or several finishing
together read top to bottom as asked. A result is never held for a job still rendering
(only those waiting to post are ordered), and lanes never wait for each other: one member's
slow upload (a 429, a big file) holds only their own later results in that channel, and a
failed post only ends its own turn.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeliveryLanes"]

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Turn:
    order: tuple[float, int, str]  # (created_at, the journal's rowid, job id)
    post: Callable[[], Awaitable[None]] = field(compare=False)
    done: asyncio.Future[None] = field(compare=False)


class DeliveryLanes:
    """Posts that run one at a time per lane, earliest first among those waiting."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """``spawn``: runs a lane's posts as a task its owner waits for on shutdown."""
        self._spawn = spawn
        self._waiting: dict[Hashable, list[_Turn]] = {}

    def post(
        self, lane: Hashable, order: tuple[float, int, str], post: Callable[[], Awaitable[None]]
    ) -> asyncio.Future[None]:
        """Run ``post`` in its turn in ``lane``; the future resolves once it ran (failed or
        not: a failure is logged here), and is cancelled when the lane's task is. Cancelling
        the future only stops waiting: the post still runs in its turn."""
        turn = _Turn(order, post, asyncio.get_running_loop().create_future())
        waiting = self._waiting.get(lane)
        if waiting is None:
            waiting = self._waiting[lane] = []
            self._spawn(self._drain(lane, waiting))
        heapq.heappush(waiting, turn)
        return turn.done

    async def _drain(self, lane: Hashable, waiting: list[_Turn]) -> None:
        try:
            while waiting:
                turn = heapq.heappop(waiting)
                try:
                    await turn.post()
                except Exception:
                    log.exception("the delivery of job %s failed; its lane goes on", turn.order[-1])
                except BaseException:
                    turn.done.cancel()
                    raise
                # Its waiter may have given up (a stop's grace ran out): the lane goes on.
                if not turn.done.done():
                    turn.done.set_result(None)
        finally:
            # No await between the last check of ``waiting`` and this: a post added later
            # starts a lane of its own.
            del self._waiting[lane]
            for turn in waiting:
                turn.done.cancel()
