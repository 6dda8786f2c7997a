"""cogs.history's sweep of posts left to delete ends when the bot stops, also when a
withdrawal wakes it in the same loop turn (review R_FX37: on Python 3.11 ``wait_for``
swallowed that cancel, and the stop waited out the sweep's whole interval)."""

from __future__ import annotations

import asyncio

import pytest

from cogs import history as cogs_history
from cogs.history import HistoryCog

# The stop waits this long at most; the sweep's interval is far longer.
STOP_WAIT_S = 5.0


class NothingToForget:
    async def forget_reply_tokens(self, _lifetime_s: float) -> None:
        return None


async def test_a_stop_in_the_turn_a_withdrawal_wakes_the_sweep_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rounds = asyncio.Queue[None]()

    async def finished(*_args: object, **_kwargs: object) -> bool:
        return True

    async def counted_round(*_args: object) -> None:
        rounds.put_nowait(None)  # no await after this: the sweep then waits

    monkeypatch.setattr(cogs_history, "finish_erasures", finished)
    monkeypatch.setattr(cogs_history, "_delete_pending", counted_round)
    cog = HistoryCog(NothingToForget(), pending_sweep_s=3600.0)  # type: ignore[arg-type]
    cog.resume_forget_me(None)  # type: ignore[arg-type]
    async with asyncio.timeout(STOP_WAIT_S):
        await rounds.get()
    cog.delete_pending_now()  # a moderator's withdrawal left posts to delete...
    async with asyncio.timeout(STOP_WAIT_S):
        await cog.cog_unload()  # ...as the bot stops
    assert rounds.empty()  # stopped before another round
