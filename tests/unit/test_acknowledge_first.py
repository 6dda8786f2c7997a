"""The work after an acknowledgement waits for the answers to the commands received before the
wait began (the caller's own defer came first), and for none older than the acknowledgement
target (bot.acknowledge_first)."""

from __future__ import annotations

import asyncio

import pytest

from bot.acknowledge_first import AcknowledgeFirst

FIRST, SECOND, LATER, SLOW = 11, 12, 13, 14
LONG_S = 60.0  # a target no test waits for
RELEASED_S = 2.0  # an answer releases a waiter within this, far inside LONG_S


@pytest.fixture
def gate() -> AcknowledgeFirst:
    return AcknowledgeFirst(ack_target_s=LONG_S)


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


async def test_an_answer_that_never_comes_holds_the_work_until_its_target_only() -> None:
    gate = AcknowledgeFirst(ack_target_s=0.05)
    gate.received(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)
    assert gate.unanswered == 0  # forgotten


async def test_one_slow_command_holds_others_work_only_until_its_target() -> None:
    """One member's command slow before its defer (a long prompt plan, up to 2.5 s) must not
    hold every other member's work for as long, nor again for each of their commands."""
    now = [0.0]
    gate = AcknowledgeFirst(ack_target_s=0.3, clock=lambda: now[0])
    gate.received(SLOW)  # never answered while this test runs
    now[0] = 0.1
    gate.received(FIRST)
    gate.answered(FIRST)
    held = await started(gate)
    assert not held.done()  # SLOW is within its target: it still goes first

    now[0] = 0.35  # SLOW is past its target
    gate.received(SECOND)
    gate.answered(SECOND)
    assert (await started(gate)).done()  # a later command is not held at all
    await asyncio.sleep(0)
    assert held.done()  # and the first one's wait ended with SLOW's target
    assert gate.unanswered == 0


async def test_a_wait_ends_when_the_command_holding_it_passes_its_target() -> None:
    """Released by the passing of time alone, with no answer nor later call to look again."""
    gate = AcknowledgeFirst(ack_target_s=0.05)
    gate.received(SLOW)
    gate.received(FIRST)
    gate.answered(FIRST)
    await asyncio.wait_for(gate.earlier_answered(), RELEASED_S)


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
