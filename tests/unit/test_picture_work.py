"""Members' picture work (reading uploads, fitting pictures again) runs on threads of its own,
each member's one at a time in the order sent, with at most ``in_hand_per_member`` being worked
or waiting (``bot.picture_work``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from bot.picture_work import AT_ONCE_PER_MEMBER, PictureWork, too_many_in_hand
from bot.policy.prompt_safety import CLOSED
from bot.user_errors import Reason, UserError
from tests.support.polling import until

A, B = 1, 2
WAIT_S = 30.0  # generous: only a broken bound waits this long


@pytest.fixture
async def reads() -> AsyncIterator[PictureWork]:
    reads = PictureWork(threads=2, in_hand_per_member=3)
    yield reads
    reads.close()


class Held:
    """Work that says when it starts and ends only once let go."""

    def __init__(self, name: str, started: list[str]) -> None:
        self.name = name
        self._started = started
        self.running = threading.Event()
        self.let_go = threading.Event()

    def __call__(self) -> str:
        self._started.append(self.name)
        self.running.set()
        assert self.let_go.wait(WAIT_S), f"{self.name} was never let go"
        return self.name


async def test_a_members_uploads_wait_in_line_while_another_members_is_read(
    reads: PictureWork,
) -> None:
    assert AT_ONCE_PER_MEMBER == 1
    started: list[str] = []
    first, second, third = (Held(f"A{n}", started) for n in (1, 2, 3))
    others = Held("B1", started)
    a_reads = [asyncio.create_task(reads.run(A, work)) for work in (first, second, third)]
    await until(first.running.is_set)
    b_read = asyncio.create_task(reads.run(B, others))
    # B's upload takes the second thread while A's first holds one: A's others wait.
    await until(others.running.is_set)
    assert started == ["A1", "B1"]
    others.let_go.set()
    assert await asyncio.wait_for(b_read, WAIT_S) == "B1"
    assert started == ["A1", "B1"]  # a thread is free, but A's second waits for A's first
    first.let_go.set()
    await until(second.running.is_set)
    second.let_go.set()
    third.let_go.set()
    assert await asyncio.wait_for(asyncio.gather(*a_reads), WAIT_S) == ["A1", "A2", "A3"]
    assert started == ["A1", "B1", "A2", "A3"]


async def test_past_the_uploads_in_hand_one_more_is_refused_until_they_are_read(
    reads: PictureWork,
) -> None:
    started: list[str] = []
    held = [Held(f"A{n}", started) for n in (1, 2, 3)]
    in_hand = [asyncio.create_task(reads.run(A, work)) for work in held]
    await until(held[0].running.is_set)
    with pytest.raises(UserError) as refused:
        await reads.run(A, Held("A4", started))
    assert str(refused.value) == too_many_in_hand(3)
    assert "You already have 3 pictures being read or prepared" in str(refused.value)
    assert refused.value.reason is Reason.COOLDOWN
    assert await asyncio.wait_for(reads.run(B, lambda: "B1"), WAIT_S) == "B1"  # B's own
    for work in held:
        work.let_go.set()
    await asyncio.wait_for(asyncio.gather(*in_hand), WAIT_S)
    assert await asyncio.wait_for(reads.run(A, lambda: "A5"), WAIT_S) == "A5"
    assert started == ["A1", "A2", "A3"]


async def test_a_cancelled_wait_keeps_the_members_turn_until_its_read_ends(
    reads: PictureWork,
) -> None:
    started: list[str] = []
    first, second = Held("A1", started), Held("A2", started)
    reading = asyncio.create_task(reads.run(A, first))
    await until(first.running.is_set)
    reading.cancel()  # the member's command went away; its decode goes on
    with pytest.raises(asyncio.CancelledError):
        await reading
    waiting = asyncio.create_task(reads.run(A, second))
    # Asked after A's second: it would take the free thread, had A's turn been given back.
    assert await asyncio.wait_for(reads.run(B, lambda: "B1"), WAIT_S) == "B1"
    assert started == ["A1"]
    first.let_go.set()
    second.let_go.set()
    assert await asyncio.wait_for(waiting, WAIT_S) == "A2"


async def test_after_close_reads_waiting_and_new_are_refused(reads: PictureWork) -> None:
    started: list[str] = []
    first, second = Held("A1", started), Held("A2", started)
    reading = asyncio.create_task(reads.run(A, first))
    await until(first.running.is_set)
    waiting = asyncio.create_task(reads.run(A, second))
    await asyncio.sleep(0)
    reads.close()
    with pytest.raises(UserError) as refused_new:
        await reads.run(B, lambda: "B1")
    assert str(refused_new.value) == CLOSED and refused_new.value.reason is Reason.CLOSED
    first.let_go.set()
    assert await asyncio.wait_for(reading, WAIT_S) == "A1"  # the read under way ends
    with pytest.raises(UserError) as refused_waiting:
        await asyncio.wait_for(waiting, WAIT_S)
    assert refused_waiting.value.reason is Reason.CLOSED
    assert started == ["A1"]
