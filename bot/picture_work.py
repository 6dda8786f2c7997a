"""A member's picture work on threads of its own: reading their uploads
(``bot.images.decoded_upload``, a mask's checks) and fitting pictures they ask for again to
Discord's upload limit (/show, U1-U4, DM me). Never on asyncio's default pool, which every
command's hop before its acknowledgement also waits in. A 58 KB PNG of 4096x4096 takes one to
two seconds of CPU to decode, a 12 MB result about as long to fit: one member's burst of 18
such uploads, or of 12 /show of one such job, filled that pool and left another member's
/imagine unanswered past Discord's 3 s; and such work at once holds the interpreter's lock in
turns (three decodes stalled the event loop over 100 ms).

A member's pictures are worked one at a time, in the order sent, the others waiting in line:
each of those commands was acknowledged already ("thinking…"), and a member who sends a few
pictures in a row, or one /blend of five, expects each to go through, not to be asked to send
it again. The threads take the members' work in turn, so another member's waits for at most
one of each such member's. Past ``IN_HAND_PER_MEMBER`` being worked or waiting, one more is
refused at once: no member sends that many by hand, and each one waiting holds its bytes (an
upload's up to 10 MiB) and, worked, would take a thread for seconds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from bot.policy.prompt_safety import CLOSED
from bot.user_errors import Reason, UserError

P = ParamSpec("P")
T = TypeVar("T")

# Every core but the event loop's, at most two: decodes or fits at once take the interpreter's
# lock in turns, which the loop then waits for.
PICTURE_THREADS = max(1, min(2, (os.cpu_count() or 1) - 1))
# A member's pictures worked at once (each holds a thread for up to seconds).
AT_ONCE_PER_MEMBER = 1
# A member's pictures being worked or waiting: one /blend's five, and a few more.
IN_HAND_PER_MEMBER = 8


def too_many_in_hand(count: int) -> str:
    return (
        f"You already have {count} pictures being read or prepared; wait for them, then try again."
    )


class PictureWork:
    """Runs members' picture work, each member's in line (``run``); ``close()`` at the bot's
    stop. One for the bot (``bot.services.Services.picture_work``)."""

    def __init__(
        self, threads: int = PICTURE_THREADS, *, in_hand_per_member: int = IN_HAND_PER_MEMBER
    ) -> None:
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="easel-pictures")
        self._in_hand_per_member = in_hand_per_member
        self._in_hand: Counter[int] = Counter()  # per member: being worked or waiting
        self._turns: dict[int, asyncio.Semaphore] = {}  # per member with any in hand
        self._closed = False

    async def run(
        self, member_id: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work`` on a picture thread once ``member_id``'s earlier work ended
        (``AT_ONCE_PER_MEMBER`` at once); a ``UserError`` when the member has
        ``IN_HAND_PER_MEMBER`` in hand already, or Easel is shutting down. The member's turn
        is the thread's until ``work`` ends, even when this wait is cancelled."""
        if self._closed:
            raise UserError(CLOSED, Reason.CLOSED)
        if (held := self._in_hand[member_id]) >= self._in_hand_per_member:
            raise UserError(too_many_in_hand(held), Reason.COOLDOWN)
        turn = self._turns.setdefault(member_id, asyncio.Semaphore(AT_ONCE_PER_MEMBER))
        self._in_hand[member_id] += 1
        try:
            await turn.acquire()
        except BaseException:
            self._leave(member_id, None)
            raise
        if self._closed:  # while it waited
            self._leave(member_id, turn)
            raise UserError(CLOSED, Reason.CLOSED)
        loop = asyncio.get_running_loop()
        running = self._threads.submit(functools.partial(work, *args, **kwargs))
        running.add_done_callback(functools.partial(self._ended, loop, member_id, turn))
        try:
            return await asyncio.wrap_future(running)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if running.cancelled() and self._closed and task is not None and not task.cancelling():
                raise UserError(CLOSED, Reason.CLOSED) from None  # dropped by ``close``
            raise

    def close(self) -> None:
        """Refuse new work and drop what has not started; returns at once (work under way
        ends on its thread within seconds; the interpreter waits for it at exit)."""
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _ended(
        self,
        loop: asyncio.AbstractEventLoop,
        member_id: int,
        turn: asyncio.Semaphore,
        _: concurrent.futures.Future[object],
    ) -> None:
        """On the thread that ran the work: its turn is given back on the loop."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing waits
            loop.call_soon_threadsafe(self._leave, member_id, turn)

    def _leave(self, member_id: int, turn: asyncio.Semaphore | None) -> None:
        if turn is not None:
            turn.release()
        self._in_hand[member_id] -= 1
        if not self._in_hand[member_id]:  # none holds or waits for its turn
            del self._in_hand[member_id]
            del self._turns[member_id]
