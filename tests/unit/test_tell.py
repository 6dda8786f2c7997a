"""cogs.common.tell after a public defer when Discord fails to answer: the refusal stays
private (a follow-up after a public "thinking…" would become that public reply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.user_errors import Reason
from cogs.common import ANSWERED_PRIVATELY, _refuse_for_quota, tell


def http_error(status: int) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="outage")
    if status == 404:
        return discord.NotFound(response, "Unknown Message")  # type: ignore[arg-type]
    return discord.HTTPException(response, "outage")  # type: ignore[arg-type]


GUILD, CHANNEL, MEMBER = 1, 2, 3


@dataclass
class DeferredInPublic:
    """An interaction deferred in public whose Discord calls fail as told."""

    look_up_fails: int | None = None
    delete_fails: int | None = None
    edit_fails: int | None = None
    calls: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    guild_id: int = GUILD
    channel_id: int = CHANNEL
    user: Any = field(default_factory=lambda: SimpleNamespace(id=MEMBER))
    client: Any = None  # what ``services_of`` reads

    def __post_init__(self) -> None:
        self.response = SimpleNamespace(
            is_done=lambda: True, type=discord.InteractionResponseType.deferred_channel_message
        )
        self.followup = SimpleNamespace(send=self._send)

    async def original_response(self) -> Any:
        self.calls.append("look up")
        if self.look_up_fails is not None:
            raise http_error(self.look_up_fails)
        return SimpleNamespace(flags=SimpleNamespace(loading=True, ephemeral=False))

    async def delete_original_response(self) -> None:
        self.calls.append("delete")
        if self.delete_fails is not None:
            status, self.delete_fails = self.delete_fails, None  # fails once
            raise http_error(status)

    async def edit_original_response(self, *, content: str) -> None:
        self.calls.append(f"edit {content}")
        if self.edit_fails is not None:
            status, self.edit_fails = self.edit_fails, None  # fails once
            raise http_error(status)

    async def _send(self, message: str, *, ephemeral: bool) -> None:
        self.calls.append(f"send ephemeral={ephemeral}")


async def test_a_look_up_discord_fails_still_keeps_the_refusal_private() -> None:
    interaction = DeferredInPublic(look_up_fails=503)
    await tell(interaction, "no")  # type: ignore[arg-type]
    assert interaction.calls == ["look up", "delete", "send ephemeral=True"]


async def test_a_reply_already_gone_is_not_deleted() -> None:
    interaction = DeferredInPublic(look_up_fails=404)
    await tell(interaction, "no")  # type: ignore[arg-type]
    assert interaction.calls == ["look up", "send ephemeral=True"]


async def test_a_reply_discord_keeps_says_nothing_of_the_refusal() -> None:
    interaction = DeferredInPublic(delete_fails=403)
    await tell(interaction, "no")  # type: ignore[arg-type]
    neutral = f"edit {ANSWERED_PRIVATELY}"
    assert interaction.calls == ["look up", "delete", neutral, "send ephemeral=True"]


async def test_a_failed_edit_leaves_the_next_tell_to_check_again() -> None:
    interaction = DeferredInPublic(delete_fails=403, edit_fails=503)
    with pytest.raises(discord.HTTPException):
        await tell(interaction, "no")  # type: ignore[arg-type]
    await tell(interaction, "something went wrong")  # type: ignore[arg-type]
    neutral = f"edit {ANSWERED_PRIVATELY}"
    assert interaction.calls == [
        *("look up", "delete", neutral),
        *("look up", "delete", "send ephemeral=True"),
    ]


async def test_a_quota_refusal_discord_would_not_carry_is_recorded_all_the_same() -> None:
    recorded: list[tuple[Any, ...]] = []

    async def record(*refusal: Any) -> None:
        recorded.append(refusal)

    interaction = DeferredInPublic(delete_fails=403, edit_fails=503)
    interaction.client = SimpleNamespace(
        services=SimpleNamespace(refusals=SimpleNamespace(record=record))
    )
    with pytest.raises(discord.HTTPException):
        await _refuse_for_quota(interaction, "⛔ over", "over")  # type: ignore[arg-type]
    assert recorded == [(GUILD, CHANNEL, MEMBER, Reason.QUOTA, "over")]
