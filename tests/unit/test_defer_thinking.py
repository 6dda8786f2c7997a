"""``defer_thinking`` takes Discord's "already acknowledged" (40060) for its own defer only when
that defer's reply was lost (a 5xx after Discord acted, which discord.py sent again): on a first
try it is another's answer (a second Easel on the same bot token), whose job must not be
journaled and charged twice."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.acknowledge_first import AcknowledgeFirst
from cogs.common import ALREADY_ACKNOWLEDGED, defer_thinking

INTERACTION_ID = 1234567890123456789


class Refused:
    """An interaction's response whose defer Discord refuses as already acknowledged."""

    def __init__(self) -> None:
        self._response_type: discord.InteractionResponseType | None = None

    async def defer(self, **_options: Any) -> None:
        answer = SimpleNamespace(status=400, reason="Bad Request")
        message = {"code": ALREADY_ACKNOWLEDGED, "message": "already acknowledged"}
        raise discord.HTTPException(answer, message)  # type: ignore[arg-type]


def interaction_with(gate: AcknowledgeFirst) -> Any:
    return SimpleNamespace(
        id=INTERACTION_ID, response=Refused(), client=SimpleNamespace(acknowledge_first=gate)
    )


async def test_a_40060_after_a_lost_reply_is_this_defers_own() -> None:
    gate = AcknowledgeFirst()
    gate.answer_lost(INTERACTION_ID)  # the HTTP trace saw a 502
    interaction = interaction_with(gate)
    await defer_thinking(interaction, private=False)
    assert interaction.response._response_type is (
        discord.InteractionResponseType.deferred_channel_message
    )


async def test_a_40060_on_a_first_try_is_anothers_answer_and_raised() -> None:
    interaction = interaction_with(AcknowledgeFirst())
    with pytest.raises(discord.HTTPException) as refused:
        await defer_thinking(interaction, private=False)
    assert refused.value.code == ALREADY_ACKNOWLEDGED
    assert interaction.response._response_type is None


async def test_a_lost_reply_is_remembered_a_minute() -> None:
    now = [0.0]
    gate = AcknowledgeFirst(clock=lambda: now[0])
    gate.answer_lost(INTERACTION_ID)
    now[0] = 59.0
    assert gate.lost_an_answer(INTERACTION_ID)
    now[0] = 61.0
    assert not gate.lost_an_answer(INTERACTION_ID)
