"""The work after an acknowledgement waits for the answers to the commands received before the
wait began (the caller's own defer came first): for a queued one up to its bound, for one
slowed by prompt plans (its own, its member's or its server's readers') only briefly
(bot.acknowledge_first)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from bot.acknowledge_first import AcknowledgeFirst, slowed_by_plans
from bot.policy.prompt_safety import PromptPlanner

FIRST, SECOND, LATER, SLOW, OTHER_SLOW, QUEUED = 11, 12, 13, 14, 15, 16
LONG_S = 60.0  # a bound no test waits for
RELEASED_S = 2.0  # an answer releases a waiter within this, far inside LONG_S


@pytest.fixture
def gate() -> AcknowledgeFirst:
    return AcknowledgeFirst(queued_bound_s=LONG_S, slowed_by_plans_s=LONG_S)


def gate_on_a_clock() -> tuple[list[float], AcknowledgeFirst]:
    """A gate with 1 s for queued commands and 0.1 s into plans, on a clock the test sets."""
    now = [0.0]
    return now, AcknowledgeFirst(queued_bound_s=1.0, slowed_by_plans_s=0.1, clock=lambda: now[0])


async def started(gate: AcknowledgeFirst) -> asyncio.Task[None]:
    """``earlier_answered`` running, and past its first step."""
    task = asyncio.create_task(gate.earlier_answered())
    await asyncio.sleep(0)
    return task


async def test_waits_until_every_command_received_before_it_is_answered(
    gate: AcknowledgeFirst,
) -> None:
    gate.received(FIRST)
    gate.received(SECOND)
    waiting = await started(gate)

    gate.answered(SECOND)
    await asyncio.sleep(0)
    assert not waiting.done()  # the first is still unanswered

    gate.answered(FIRST)
    await asyncio.sleep(0)
    assert waiting.done()  # released by the answer, not by the target
    assert gate.unanswered == 0


async def test_does_not_wait_for_commands_received_after_it(gate: AcknowledgeFirst) -> None:
    gate.received(FIRST)
    waiting = await started(gate)
    gate.received(LATER)

    gate.answered(FIRST)
    await asyncio.sleep(0)
    assert waiting.done()
    assert gate.unanswered == 1  # LATER's answer is still due, and nothing waited for it


async def test_a_command_received_after_the_callers_own_but_before_its_wait_holds_it(
    gate: AcknowledgeFirst,
) -> None:
    """The gate knows no caller: the wait covers whatever was received before it began."""
    gate.received(FIRST)  # the caller's own command...
    gate.received(LATER)  # ...then another one, before the caller's defer returned
    gate.answered(FIRST)
    waiting = await started(gate)
    await asyncio.sleep(0)
    assert not waiting.done()

    gate.answered(LATER)
    await asyncio.sleep(0)
    assert waiting.done()


async def test_goes_on_at_once_when_nothing_earlier_is_unanswered(gate: AcknowledgeFirst) -> None:
    gate.received(FIRST)
    gate.answered(FIRST)
    gate.answered(LATER)  # an answer to a command it was not told of (an autocomplete's)
    waiting = await started(gate)
    assert waiting.done()


async def test_an_answer_that_never_comes_holds_the_work_until_its_bound_only() -> None:
    gate = AcknowledgeFirst(queued_bound_s=0.05)
    gate.received(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)
    assert gate.unanswered == 0  # forgotten


async def test_a_queued_command_holds_others_work_until_it_is_answered() -> None:
    """Unanswered only because the burst's other commands go first: what the gate is for, so it
    holds past the acknowledgement goal (0.3 s), up to its bound."""
    now, gate = gate_on_a_clock()
    gate.received(FIRST)
    gate.received(SECOND)
    gate.answered(SECOND)
    held = await started(gate)

    now[0] = 0.9
    gate.received(LATER)
    gate.answered(LATER)
    await asyncio.sleep(0)
    assert not held.done()
    gate.answered(FIRST)
    await asyncio.sleep(0)
    assert held.done()


async def test_one_slow_command_holds_others_work_only_briefly_into_its_plan() -> None:
    """One member's command slow before its defer (a long prompt plan, up to 2.5 s) must not
    hold every other member's work for as long, nor again for each of their commands."""
    now, gate = gate_on_a_clock()
    gate.received(SLOW)  # never answered while this test runs
    now[0] = 0.05
    gate.slowed_by_plans(SLOW, since=lambda: 0.05)  # its prompt plan starts
    gate.received(FIRST)
    gate.answered(FIRST)
    held = await started(gate)
    now[0] = 0.14
    gate.received(SECOND)
    gate.answered(SECOND)
    assert not (await started(gate)).done()  # SLOW is within its plan's allowance
    assert not held.done()

    now[0] = 0.16  # 0.11 s into its plan
    gate.received(LATER)
    gate.answered(LATER)
    assert (await started(gate)).done()  # a later command is not held at all
    await asyncio.sleep(0)
    assert held.done()  # and the earlier waits ended with it
    assert gate.unanswered == 0


@pytest.mark.parametrize(("plan_ends_at", "holds_again"), [(0.05, True), (0.2, False)])
async def test_a_command_holds_again_after_its_plan_only_when_that_ended_in_time(
    plan_ends_at: float, holds_again: bool
) -> None:
    """A quick plan: the command is queued behind the burst again. One past ``slowed_by_plans_s``:
    forgotten for good."""
    now, gate = gate_on_a_clock()
    gate.received(SLOW)
    gate.slowed_by_plans(SLOW, since=lambda: 0.0)
    now[0] = plan_ends_at
    gate.slowed_by_plans(SLOW, since=None)  # on its way to its defer
    now[0] = 0.5
    gate.received(FIRST)
    gate.answered(FIRST)
    waiting = await started(gate)
    assert waiting.done() is not holds_again
    gate.answered(SLOW)
    await asyncio.sleep(0)
    assert waiting.done()
    assert gate.unanswered == 0


async def test_a_wait_ends_when_the_command_holding_it_passes_its_bound() -> None:
    """Released by the passing of time alone, with no answer nor later call to look again."""
    gate = AcknowledgeFirst(queued_bound_s=0.05)
    gate.received(SLOW)
    gate.received(FIRST)
    gate.answered(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)


async def test_a_wait_ends_once_the_command_holding_it_is_long_in_its_plan() -> None:
    gate = AcknowledgeFirst(queued_bound_s=LONG_S, slowed_by_plans_s=0.05)
    gate.received(SLOW)
    plan_began = time.monotonic()
    gate.slowed_by_plans(SLOW, since=lambda: plan_began)
    gate.received(FIRST)
    gate.answered(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)


async def test_plans_are_told_from_the_commands_own_task() -> None:
    """``received`` in a command's task makes ``slowed_by_plans`` there that command's;
    elsewhere it tells nobody."""
    slowed_by_plans(lambda: time.monotonic() - LONG_S)  # no command's task: nothing happens
    gate = AcknowledgeFirst(queued_bound_s=LONG_S, slowed_by_plans_s=0.05)

    async def slow_command() -> None:
        gate.received(SLOW)
        plan_began = time.monotonic()
        slowed_by_plans(lambda: plan_began)
        await asyncio.sleep(LONG_S)

    command = asyncio.create_task(slow_command())
    await asyncio.sleep(0)
    gate.received(FIRST)
    gate.answered(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)
    command.cancel()


async def test_slow_prompt_plans_hold_others_work_only_briefly() -> None:
    """Through the prompt planner: a command whose plan runs long, the same member's next
    command waiting behind it, and another member's command waiting for its server's share of
    the readers (``SERVER_THREADS``) while two slow plans hold them, all stop holding the
    others' work: two members' slow prompts must not hold everyone's work for the bound."""
    gate = AcknowledgeFirst(queued_bound_s=LONG_S, slowed_by_plans_s=0.05)
    planner = PromptPlanner(None, budget_s=LONG_S)
    slow_plan_ends = threading.Event()

    def slow_plan(*_: Any) -> None:
        slow_plan_ends.wait(LONG_S)

    planner._plan = slow_plan  # type: ignore[method-assign]

    async def command(interaction_id: int, member_id: int) -> None:
        gate.received(interaction_id)
        await planner.check(None, (), member_id, guild_id=1)  # type: ignore[arg-type]

    commands: list[asyncio.Task[None]] = []
    try:
        slow = asyncio.create_task(command(SLOW, 1))
        commands.append(slow)
        await asyncio.sleep(0.01)
        same_member = asyncio.create_task(command(SECOND, 1))  # waits behind SLOW's plan
        commands.append(same_member)
        gate.received(FIRST)
        gate.answered(FIRST)
        await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)
        assert not slow.done() and not same_member.done()

        other_slow = asyncio.create_task(command(OTHER_SLOW, 2))
        commands.append(other_slow)
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(command(QUEUED, 3))  # waits for one of the two readers
        commands.append(queued)
        await asyncio.sleep(0)
        await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)
        assert not queued.done() and not other_slow.done()
    finally:
        slow_plan_ends.set()
        await asyncio.gather(*commands, return_exceptions=True)
        planner.close()


async def test_a_command_waiting_for_its_servers_readers_holds_while_their_plans_are_new() -> None:
    """Waiting for its server's readers, a command is slowed by the oldest plan on them *now*:
    as quick plans follow each other there (a burst), it holds, however long it has waited."""
    into_plans_s = 1.0
    gate = AcknowledgeFirst(queued_bound_s=LONG_S, slowed_by_plans_s=into_plans_s)
    planner = PromptPlanner(None, budget_s=LONG_S)
    plan_ends = {member: threading.Event() for member in range(1, 6)}

    def plan(member_id: int, *_: Any) -> None:
        plan_ends[member_id].wait(LONG_S)

    planner._plan = plan  # type: ignore[method-assign]

    async def command(member_id: int) -> None:
        gate.received(member_id)
        await planner.check(member_id, (), member_id, guild_id=1)  # type: ignore[arg-type]

    commands: list[asyncio.Task[None]] = []
    try:
        for member_id in range(1, 6):  # 1 and 2 take the readers, 3 to 5 wait in line
            commands.append(asyncio.create_task(command(member_id)))
            await asyncio.sleep(0.01)
        held = asyncio.create_task(gate.earlier_answered())
        await asyncio.sleep(0.6 * into_plans_s)
        for member_id in (1, 2, 3, 4):  # 3 and 4 are answered once their plans start
            gate.answered(member_id)
        plan_ends[1].set()
        plan_ends[2].set()
        await asyncio.sleep(0.7 * into_plans_s)  # 1.3 s after 1's and 2's plans began
        assert not held.done(), "5 stopped holding, behind plans begun 0.7 s ago"
        await asyncio.wait_for(held, 2 * into_plans_s)  # and lets go 1 s into 3's and 4's
    finally:
        for ends in plan_ends.values():
            ends.set()
        await asyncio.gather(*commands, return_exceptions=True)
        planner.close()


async def test_a_cancelled_wait_leaves_the_others_waiting_in_order(gate: AcknowledgeFirst) -> None:
    gate.received(FIRST)
    cancelled = await started(gate)
    gate.received(SECOND)
    after_both = await started(gate)
    cancelled.cancel()
    await asyncio.sleep(0)

    gate.answered(FIRST)
    await asyncio.sleep(0)
    assert not after_both.done()
    gate.answered(SECOND)
    await asyncio.sleep(0)
    assert after_both.done()
