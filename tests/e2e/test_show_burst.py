"""One member's burst of /show, or of U1-U4, leaves another member's command answered at once:
each fits its pictures to Discord's upload limit on the picture threads, in the member's line
(``bot.picture_work``), not on asyncio's default pool, where each command's hop before its
acknowledgement waits (``cogs.common.requests_for_member``). Before, 12 /show of a job of two
12.6 MB pictures (about a second of CPU each to fit) left another member's /imagine
unanswered past Discord's 3 s."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import cogs.history
import cogs.results.buttons
import cogs.withdrawals
from cogs.results.fitted import fitted_file
from inference.compare import is_comparison
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, job_id_of
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.support.pictures import has_picture
from tests.support.polling import until

BYSTANDER = 4242
# asyncio's default pool, made this size here: the burst that fills it is the same on any
# machine (its own size is the CPUs' count plus four).
DEFAULT_POOL_THREADS = 4
WAIT_S = 60.0  # generous: only a command stuck behind the held fits waits this long


class HeldFits:
    """Fits held until ``let_go``, on the threads named in ``fitting``; ``asked`` counts the
    commands that asked for theirs (right after a counted call, with no wait between)."""

    def __init__(self) -> None:
        self.let_go = threading.Event()
        self.fitting: list[str] = []
        self.asked = 0

    def holding(self, fit: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **options: Any) -> Any:
            self.fitting.append(threading.current_thread().name)
            assert self.let_go.wait(WAIT_S), "the held fits were never let go"
            return fit(*args, **options)

        return held

    def counting(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            self.asked += 1
            return call(*args)

        return counted

    def counting_async(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def counted(*args: Any) -> Any:
            answer = await call(*args)
            self.asked += 1
            return answer

        return counted


async def test_another_members_command_is_answered_while_one_members_shows_are_fitted(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldFits()
    monkeypatch.setattr(cogs.history, "fitted_file", held.holding(fitted_file))
    monkeypatch.setattr(cogs.history, "is_comparison", held.counting(is_comparison))

    async def shows(result: StoredMessage) -> list[InteractionHandle]:
        shown = {"job_id": job_id_of(result)}
        # One /show more than the default pool's threads.
        return [
            await fake_discord.invoke_command("show", shown)
            for _ in range(DEFAULT_POOL_THREADS + 1)
        ]

    await bystander_answered_during(fake_discord, start_easel, held, shows, pictures=1)


async def test_another_members_command_is_answered_while_one_members_picks_are_fitted(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    held, buttons = HeldFits(), cogs.results.buttons
    monkeypatch.setattr(buttons, "fitted_file", held.holding(fitted_file))
    checked = held.counting_async(cogs.withdrawals.check_posts_there)
    monkeypatch.setattr(buttons, "check_posts_there", checked)

    async def picks(result: StoredMessage) -> list[InteractionHandle]:
        # U1-U4: as many as the default pool's threads (a button clicked again is refused).
        return [await fake_discord.click(result, label=f"U{idx}") for idx in range(1, 5)]

    await bystander_answered_during(fake_discord, start_easel, held, picks, pictures=4)


async def bystander_answered_during(
    fake: FakeDiscord,
    start_easel: StartEasel,
    held: HeldFits,
    burst_of: Callable[[StoredMessage], Awaitable[list[InteractionHandle]]],
    *,
    pictures: int,
) -> None:
    """A member's result of ``pictures``, then their ``burst_of`` commands asking for it
    again, each fit held: another member's /imagine is acknowledged meanwhile."""
    assert pictures <= DEFAULT_POOL_THREADS
    # Shut down with the test's loop, as the loop's own would be.
    pool = ThreadPoolExecutor(DEFAULT_POOL_THREADS, thread_name_prefix="default-pool")
    asyncio.get_running_loop().set_default_executor(pool)
    fake.add_member(BYSTANDER, "bystander", roles=(fake.member_role_id,))
    async with start_easel():
        made = await fake.invoke_command("imagine", {"prompt": "a fox", "count": pictures, **QUICK})
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        try:
            burst = await burst_of(result)
            await until(lambda: held.asked == len(burst) and bool(held.fitting))
            bystander = await fake.invoke_command(
                "imagine", {"prompt": "a dog", **QUICK}, user=BYSTANDER
            )
            await bystander.wait_for_ack(timeout=WAIT_S)
            # Answered while the burst's first fit was still held, the others waiting in the
            # member's line, not on threads.
            assert held.fitting == ["easel-pictures_0"]
        finally:
            held.let_go.set()
        for handle in [*burst, bystander]:  # each of the burst goes through, in turn
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert len(held.fitting) == len(burst)
    assert fake.take_violations() == []
