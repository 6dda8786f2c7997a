"""Acknowledge first: work that follows an acknowledgement waits while commands received
before it are still unanswered, for a bounded time.

Discord fails an interaction that has no answer within 3 s; nothing after the answer has a
deadline. In a burst, the work each command does once deferred (journal, queue, the "queued"
edit) runs on the event loop and the database thread between the acknowledgements of the
commands behind it, so the last one waits for all the others' work. With this gate that
work runs after them instead.

The gate is global, not per server: every server's commands share the one event loop's CPU,
so any server's unanswered command is held up by any server's work. The wait covers every
command received before ``earlier_answered`` is called (after the caller's own defer), so a
command received after the caller but before that call holds it too.

How long an unanswered command holds the others depends on why it is still unanswered. One
queued behind the loop (the burst's other commands) holds them up to ``queued_bound_s`` after
its receipt: that is what the gate is for. One slowed by prompt plans (the plan it runs, its
member's earlier plan it waits behind, or the oldest of those holding its server's readers:
each up to 2.5 s, member-written; ``slowed_by_plans``) holds them no longer than
``slowed_by_plans_s`` into those plans, and never again: one or two members' slow prompts must
not hold every other member's work.

Pure asyncio: the composition root tells it of each command as it arrives (``received``, in
the command's task) and of each first answer Discord took or refused for good (``answered``,
from the HTTP trace), or whose reply was lost (``answer_lost``); the prompt planner tells it
of the plans a command waits on from that task.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections import deque
from collections.abc import Callable

from bot.memo import ExpiringKeys

# Queued commands hold the work after earlier defers for up to this after their receipt: a
# bound for what the gate is never told (a command that ends with no answer), well within
# Discord's 3 s; a burst of 200 is acknowledged in about 0.5 s on a 2-core machine.
QUEUED_BOUND_S = 1.0
# A command waiting on prompt plans holds others for at most this into them. A burst's plans
# take a millisecond or so of CPU each (tens of ms of wall time under load); a slow one up to
# 2.5 s (``PLAN_BUDGET_S``).
SLOWED_BY_PLANS_S = 0.1

# A first answer whose reply was lost (a 5xx, a dropped connection: discord.py sends it again)
# is remembered this long: Discord then refusing the resend as already answered (40060) means
# the first one landed (``cogs.common.defer_thinking``); without such a loss, another answered.
LOST_ANSWERS_KEPT_S = 60.0
LOST_ANSWERS_KEPT = 10_000

# When the plans a command waits on began (``time.monotonic``; None: none now), asked each time
# the gate looks: the plans holding a server's readers change while the command waits.
PlansSince = Callable[[], float | None]


@dataclasses.dataclass
class _Command:
    number: int  # its place in arrival order
    received_at: float
    plans_since: PlansSince | None = None  # the plans it waits on, if any


class AcknowledgeFirst:
    """Counts the commands received and not yet answered, in arrival order."""

    def __init__(
        self,
        *,
        queued_bound_s: float = QUEUED_BOUND_S,
        slowed_by_plans_s: float = SLOWED_BY_PLANS_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queued_bound_s = queued_bound_s
        self._slowed_by_plans_s = slowed_by_plans_s
        self._clock = clock
        self._arrivals = 0  # commands received so far: the next one's number
        self._unanswered: dict[int, _Command] = {}  # by interaction id, until forgotten
        # (arrival number, interaction id), oldest first; answered or forgotten ones are
        # dropped once they reach the front.
        self._in_arrival_order: deque[tuple[int, int]] = deque()
        # (arrivals before it, its future): released once none of those holds it.
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()
        # Releases the waiters once the oldest command that holds them stops holding.
        self._stops_holding: asyncio.TimerHandle | None = None
        self._lost_answers: ExpiringKeys[int] = ExpiringKeys(LOST_ANSWERS_KEPT_S, LOST_ANSWERS_KEPT)

    @property
    def unanswered(self) -> int:
        """Commands still unanswered and holding, as of the latest look."""
        return len(self._unanswered)

    def received(self, interaction_id: int) -> float:
        """Called from the command's own task: its later ``slowed_by_plans`` calls are its.
        When it was received (this gate's clock, monotonic unless a test's)."""
        received_at = self._clock()
        self._unanswered[interaction_id] = _Command(self._arrivals, received_at)
        self._in_arrival_order.append((self._arrivals, interaction_id))
        self._arrivals += 1
        _current_command.set((self, interaction_id))
        return received_at

    def answer_lost(self, interaction_id: int) -> None:
        """The interaction's first answer got no reply (a 5xx, or the connection dropped),
        from the HTTP trace: discord.py sends it again, and Discord may have taken it."""
        self._lost_answers.add(interaction_id, self._clock())

    def lost_an_answer(self, interaction_id: int) -> bool:
        """Whether a first answer of the interaction got no reply lately (``answer_lost``)."""
        return self._lost_answers.holds(interaction_id, self._clock())

    def answered(self, interaction_id: int) -> None:
        """Discord took (or refused for good) the interaction's first answer; any id is
        accepted."""
        if self._unanswered.pop(interaction_id, None) is not None:
            self._release()

    def slowed_by_plans(self, interaction_id: int, since: PlansSince | None) -> None:
        """The command waits, from now, on prompt plans begun at ``since()`` (this gate's
        clock); None: on none. Past ``slowed_by_plans_s`` into those it waited on, the command
        is forgotten."""
        command = self._unanswered.get(interaction_id)
        if command is None:
            return
        if self._plans_end_holding(command) <= self._clock():
            del self._unanswered[interaction_id]
        else:
            command.plans_since = since
        self._release()

    async def earlier_answered(self) -> None:
        """Return once every command received before this call was answered or holds it no
        more (``queued_bound_s`` after its receipt at most)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((self._arrivals, future))
        self._release()
        await future  # at once when it is already settled

    def _plans_end_holding(self, command: _Command) -> float:
        """When the plans the command waits on stop its holding (infinity: none)."""
        since = None if command.plans_since is None else command.plans_since()
        return float("inf") if since is None else since + self._slowed_by_plans_s

    def _holds_until(self, command: _Command) -> float:
        return min(command.received_at + self._queued_bound_s, self._plans_end_holding(command))

    def _oldest_holding(self) -> _Command | None:
        """The oldest command still unanswered and holding; older unanswered ones are
        forgotten."""
        order = self._in_arrival_order
        now = self._clock()
        while order:
            command = self._unanswered.get(order[0][1])
            if command is not None and now < self._holds_until(command):
                return command
            _, interaction_id = order.popleft()
            self._unanswered.pop(interaction_id, None)
        return None

    def _release(self) -> None:
        """Settle the waiters nothing holds any more (a cancelled one included) and look
        again when the oldest command still holding one stops holding."""
        oldest = self._oldest_holding()
        waiting = self._waiting
        while waiting and (
            oldest is None or waiting[0][0] <= oldest.number or waiting[0][1].done()
        ):
            _settle(waiting.popleft()[1])
        if self._stops_holding is not None:
            self._stops_holding.cancel()
            self._stops_holding = None
        if waiting and oldest is not None:
            delay = self._holds_until(oldest) - self._clock()
            self._stops_holding = asyncio.get_running_loop().call_later(delay, self._release)


# The gate and interaction id of the command whose task this is (set by ``received``).
_current_command: contextvars.ContextVar[tuple[AcknowledgeFirst, int] | None] = (
    contextvars.ContextVar("easel_current_command", default=None)
)


def slowed_by_plans(since: PlansSince | None) -> None:
    """The command whose task calls this waits, from now, on prompt plans begun at ``since()``
    (``time.monotonic``: its own plan, its member's previous one it waits behind, or the oldest
    of those holding its server's readers); None: on none. Outside a command's task (no
    ``received`` in it): nothing."""
    current = _current_command.get()
    if current is not None:
        gate, interaction_id = current
        gate.slowed_by_plans(interaction_id, since)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
