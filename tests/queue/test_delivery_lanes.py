"""A lane's turns, when one of its waiters stops waiting (a stop's grace ran out for the batch
that waits for them): the post still runs in its turn, and so do the turns after it."""

from __future__ import annotations

import asyncio

from bot.jobs.delivery_lanes import DeliveryLanes


async def test_a_waiter_that_gives_up_does_not_end_its_lane() -> None:
    tasks: list[asyncio.Task[None]] = []
    lanes = DeliveryLanes(lambda work: tasks.append(asyncio.create_task(work)))
    release = asyncio.Event()
    posted: list[str] = []

    async def held() -> None:
        await release.wait()
        posted.append("first")

    async def quick() -> None:
        posted.append("second")

    first = lanes.post("lane", (1.0, 1, "a"), held)
    waiter = asyncio.ensure_future(asyncio.gather(first))  # as a batch's delivery waits
    second = lanes.post("lane", (2.0, 2, "b"), quick)  # another batch's, in the same lane
    await asyncio.sleep(0)
    waiter.cancel()  # the batch's waiting is cancelled: so is its turn's future
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)  # the lane's task ends without an error
    assert posted == ["first", "second"]
    assert first.cancelled() and second.done() and not second.cancelled()
