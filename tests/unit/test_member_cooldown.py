"""bot.cooldowns: a member runs a costly command once per period (/forget-me); a run that
failed before it erased anything gives its period back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.cooldowns import MemberCooldown
from bot.user_errors import UserError
from cogs.history import HistoryCog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_second_run_inside_the_period_is_told_when_it_ends() -> None:
    clock = Clock()
    cooldown = MemberCooldown(60.0, clock, clock)
    assert cooldown.claim(1) is None
    clock.now += 59.0
    assert cooldown.claim(1) == 1060.0
    assert cooldown.claim(2) is None  # per member
    clock.now = 1060.0
    assert cooldown.claim(1) is None  # the period ended: a new one starts
    assert cooldown.claim(1) == 1120.0


def test_a_step_of_the_wall_clock_neither_lengthens_nor_ends_a_period() -> None:
    """The period runs on the monotonic clock: a step back of the host's wall clock (an NTP
    correction, a resumed VM) does not lock the member out, nor does it show a past time as
    the end; a step forward does not end it (review AUD3)."""
    monotonic, wall = Clock(), Clock()
    cooldown = MemberCooldown(900.0, monotonic, wall)
    assert cooldown.claim(1) is None
    wall.now -= 2 * 3600  # stepped back 2 h
    monotonic.now += 300.0
    wall.now += 300.0
    assert cooldown.claim(1) == wall.now + 600.0  # the 10 minutes left, from the wall of now
    wall.now += 3 * 3600  # stepped forward 3 h
    assert cooldown.claim(1) == wall.now + 600.0
    monotonic.now += 600.0
    assert cooldown.claim(1) is None


def test_a_failed_run_gives_its_period_back() -> None:
    cooldown = MemberCooldown(60.0, Clock())
    assert cooldown.claim(1) is None
    cooldown.release(1)
    assert cooldown.claim(1) is None


async def deferred(**_kwargs: object) -> None:
    return None


def forget_me_interaction(
    defer: Callable[..., Awaitable[None]] = deferred,
) -> discord.Interaction[Any]:
    """A /forget-me of member 1 as the cog reads it, acknowledged by ``defer``."""
    interaction = SimpleNamespace(
        # Its direct messages with Easel known (discord.py's cache): no lookup.
        user=SimpleNamespace(id=1, dm_channel=SimpleNamespace(id=900)),
        application_id=7,
        token="t",
        response=SimpleNamespace(defer=defer),
    )
    return interaction  # type: ignore[return-value]


async def test_a_forget_me_whose_defer_discord_refused_can_be_run_again_at_once() -> None:
    """Nothing was erased when the acknowledgement failed (the interaction expired under
    load): the member's retry runs, rather than being told to wait 15 minutes."""

    class Erase:
        async def forget(self, user_id: int, *_answers: object, **_options: object) -> None:
            raise UserError("erased")  # reached: the retry was not refused

    async def expired(**_kwargs: object) -> None:
        response = SimpleNamespace(status=404, reason="Not Found")
        raise discord.NotFound(response, "Unknown interaction")  # type: ignore[arg-type]

    cog = HistoryCog(Erase())  # type: ignore[arg-type]
    with pytest.raises(discord.NotFound):
        await cog._erase(forget_me_interaction(expired))
    with pytest.raises(UserError, match="erased"):
        await cog._erase(forget_me_interaction())
