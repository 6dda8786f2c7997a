"""bot.cooldowns: a member runs a costly command once per period (/forget-me); a run that
failed before it erased anything gives its period back."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import pytest

from bot.cooldowns import MemberCooldown
from cogs.history import HistoryCog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_run_inside_the_period_is_told_when_it_ends() -> None:
    clock = Clock()
    cooldown = MemberCooldown(60.0, clock)
    assert cooldown.claim(1) is None
    clock.now += 59.0
    assert cooldown.claim(1) == 1060.0
    assert cooldown.claim(2) is None  # per member
    clock.now = 1060.0
    assert cooldown.claim(1) is None  # the period ended: a new one starts
    assert cooldown.claim(1) == 1120.0


def test_a_failed_run_gives_its_period_back() -> None:
    cooldown = MemberCooldown(60.0, Clock())
    assert cooldown.claim(1) is None
    cooldown.release(1)
    assert cooldown.claim(1) is None


async def test_a_forget_me_whose_defer_discord_refused_can_be_run_again_at_once() -> None:
    """Nothing was erased when the acknowledgement failed (the interaction expired under
    load): the member's retry runs, rather than being told to wait 15 minutes."""

    class Erase:
        async def forget(self, user_id: int, reply: object = None) -> None:
            raise RuntimeError("erased")  # reached: the retry was not refused

    async def expired(**_kwargs: object) -> None:
        response = SimpleNamespace(status=404, reason="Not Found")
        raise discord.NotFound(response, "Unknown interaction")  # type: ignore[arg-type]

    async def deferred(**_kwargs: object) -> None:
        return None

    cog = HistoryCog(Erase())  # type: ignore[arg-type]
    first = SimpleNamespace(
        user=SimpleNamespace(id=1),
        application_id=7,
        token="t",
        response=SimpleNamespace(defer=expired),
    )
    with pytest.raises(discord.NotFound):
        await HistoryCog.forget_me.callback(cog, first)  # type: ignore[arg-type]
    again = SimpleNamespace(
        user=SimpleNamespace(id=1),
        application_id=7,
        token="t",
        response=SimpleNamespace(defer=deferred),
    )
    with pytest.raises(RuntimeError, match="erased"):
        await HistoryCog.forget_me.callback(cog, again)  # type: ignore[arg-type]
