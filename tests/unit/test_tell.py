"""cogs.common.tell after a defer when Discord fails to answer: the refusal stays private (a
follow-up after a public "thinking…" would become that public reply), and a job's reply stays
the job's (a follow-up after its "thinking…", public or not, would become it, for the job's
next edit to replace)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import discord
import pytest

import cogs.common
from bot.jobs.accounting import QuotaExceeded
from bot.refusals import quota_refused
from bot.user_errors import Reason
from cogs.common import _JOB_RECORDED, ANSWERED_PRIVATELY, _refuse, tell


def http_error(status: int) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="outage")
    if status == 404:
        return discord.NotFound(response, "Unknown Message")  # type: ignore[arg-type]
    return discord.HTTPException(response, "outage")  # type: ignore[arg-type]


GUILD, CHANNEL, MEMBER = 1, 2, 3
JOB = "job-1"


@dataclass
class DeferredInPublic:
    """An interaction deferred in public whose Discord calls fail as told."""

    look_up_fails: int | None = None
    look_ups_loading: int = 1_000  # how many look-ups find it still "thinking…"
    ephemeral: bool = False  # deferred privately
    # Which ask of the job's results has its place replace "thinking…" (None: none does).
    place_lands_at: int | None = None
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
        self.followup = SimpleNamespace(send=self._send, fetch_message=self._fetch)
        if self.client is None:
            self.client = SimpleNamespace(results=SimpleNamespace(replace_thinking=self._place))

    async def _fetch(self, message_id: str) -> Any:
        assert message_id == "@original"
        self.calls.append("look up")
        if self.look_up_fails is not None:
            status, self.look_up_fails = self.look_up_fails, None  # fails once
            raise http_error(status)
        self.look_ups_loading -= 1
        loading = self.look_ups_loading >= 0
        return SimpleNamespace(flags=SimpleNamespace(loading=loading, ephemeral=self.ephemeral))

    async def _place(self, job_id: str) -> bool:
        assert job_id == JOB
        self.calls.append("place again")
        if self.place_lands_at is None:
            return False
        self.place_lands_at -= 1
        if self.place_lands_at == 0:
            self.look_ups_loading = 0  # replaced
        return self.place_lands_at <= 0

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
        await _refuse(interaction, quota_refused(QuotaExceeded("over")))  # type: ignore[arg-type]
    assert recorded == [(GUILD, CHANNEL, MEMBER, Reason.QUOTA, "⛔ Over.")]  # told as a sentence


@pytest.fixture
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cogs.common, "JOB_REPLY_RECHECKS_S", (0.0, 0.0, 0.0, 0.0))


@pytest.mark.usefixtures("no_pauses")
async def test_a_jobs_reply_is_never_edited_nor_deleted_when_discord_fails_to_say() -> None:
    """The job's result may already be in its reply: an edit would replace its caption."""
    interaction = DeferredInPublic(look_up_fails=503, look_ups_loading=0)
    interaction.extras[_JOB_RECORDED] = JOB
    await tell(interaction, "🔁 1 more job(s)")  # type: ignore[arg-type]
    assert interaction.calls == ["look up", "place again", "look up", "send ephemeral=True"]


@pytest.mark.usefixtures("no_pauses")
async def test_a_message_waits_for_the_job_to_replace_its_thinking() -> None:
    interaction = DeferredInPublic(look_ups_loading=2)  # its result lands: not followed
    interaction.extras[_JOB_RECORDED] = JOB
    await tell(interaction, "🔁 1 more job(s)")  # type: ignore[arg-type]
    assert interaction.calls == [
        *("look up", "place again", "look up", "place again", "look up"),
        "send ephemeral=True",
    ]


@pytest.mark.usefixtures("no_pauses")
async def test_a_jobs_place_is_sent_again_for_the_message_to_go(  # review R3 #1
) -> None:
    """Its first edit failed, and a queued job makes no other until it renders."""
    interaction = DeferredInPublic(place_lands_at=2)
    interaction.extras[_JOB_RECORDED] = JOB
    await tell(interaction, "⛔ Repeat 2 of 2: no")  # type: ignore[arg-type]
    assert interaction.calls == [
        *("look up", "place again", "look up", "place again"),
        "send ephemeral=True",
    ]


@pytest.mark.usefixtures("no_pauses")
async def test_a_private_jobs_thinking_is_not_taken_by_the_message() -> None:  # review R3 #2
    """Discord would make the message the job's reply, which its next edit replaces."""
    interaction = DeferredInPublic(ephemeral=True, place_lands_at=1)
    interaction.extras[_JOB_RECORDED] = JOB
    await tell(interaction, "🔁 1 more job(s)")  # type: ignore[arg-type]
    assert interaction.calls == ["look up", "place again", "send ephemeral=True"]
    # No job owns it: the message may be that reply, private as it is.
    interaction = DeferredInPublic(ephemeral=True)
    await tell(interaction, "no")  # type: ignore[arg-type]
    assert interaction.calls == ["look up", "send ephemeral=True"]


@pytest.mark.usefixtures("no_pauses")
async def test_a_message_a_jobs_thinking_would_publish_is_not_sent() -> None:
    interaction = DeferredInPublic()  # every edit of the job's reply fails
    interaction.extras[_JOB_RECORDED] = JOB
    await tell(interaction, "⛔ Repeat 2 of 2: no")  # type: ignore[arg-type]
    tries = ["look up", *("place again", "look up") * 4]
    assert interaction.calls == tries
    await tell(interaction, "later")  # type: ignore[arg-type]  # tried again
    assert interaction.calls == tries * 2
