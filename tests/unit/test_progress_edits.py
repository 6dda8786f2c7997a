"""A job's progress edits go one at a time, and ticks that come while one is in flight replace
each other: a slow Discord gets the edit in flight and then only the newest text (with the
newest preview), and ``settle`` waits for no backlog of stale texts. ``show_queued`` returns
once "thinking…" is replaced, however long the edits that follow take. A pointer edit that
finds the progress message gone withdraws the job, as a progress edit does."""

from __future__ import annotations

import asyncio
import datetime
import time
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from bot.engines import PROGRESS_EDIT_INTERVAL_S
from bot.jobs.queue import FinishedJob, JobState
from cogs.contexts import _RECEIVED_AT
from cogs.results import progress as progress_module
from cogs.results.posting import DiscordResults, _original_response_recorded
from cogs.results.progress import (
    INTERACTION_TOKEN_LIFETIME_S,
    RECEIPTS_KEPT_S,
    LastMinute,
    Pointer,
    ProgressMessages,
    _moved_enough,
    _Watched,
    queued_text,
)
from db.jobs import JobStatus
from inference.types import RenderRequest, StepProgress


class _SlowFollowup:
    """An interaction's webhook whose edits wait until the test lets them through."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []  # (text, with a preview)
        self.edit_started = asyncio.Event()
        self.let_through = asyncio.Event()

    async def edit_message(
        self, message_id: Any, *, content: str, view: Any, attachments: Any
    ) -> None:
        self.sent.append((content, attachments is not discord.utils.MISSING))
        self.edit_started.set()
        await self.let_through.wait()


async def _nothing() -> None:
    return None


async def _landed_nowhere(message: Any) -> None:
    return None


def _watched_through(followup: _SlowFollowup) -> _Watched:
    """A live token's progress message, edited through ``followup``, recorded nowhere."""
    return _Watched(
        cast(discord.Webhook, followup),
        lambda: True,
        False,
        on_deleted=_nothing,
        on_landed=_landed_nowhere,
    )


# Progress message 5 in channel 2 of server 1.
_POINTER = Pointer(1, 2, 5, "Job `job` ended; its result is posted here: ...")


async def test_ticks_during_a_slow_edit_send_only_the_newest_text() -> None:
    followup = _SlowFollowup()
    watched = _watched_through(followup)
    view = discord.ui.View(timeout=None)
    watched.schedule("step 0", view)
    await followup.edit_started.wait()
    for step in range(1, 10):  # the engine's ticks while Discord is slow
        watched.preview = f"preview {step}".encode()
        watched.schedule(f"step {step}", view)
    followup.let_through.set()
    await watched.settle()
    assert followup.sent == [("step 0", False), ("step 9", True)]


class _GatedFollowup:
    """An interaction's webhook whose every edit waits for its own gate."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Event] = []
        self.edit_started = asyncio.Event()

    async def edit_message(self, message_id: Any, **fields: Any) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.edit_started.set()
        await gate.wait()


async def test_show_queued_returns_once_its_first_edit_is_done_while_ticks_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendering = SimpleNamespace(status="running", position=None, eta_s=None)

    async def state(job_id: str) -> SimpleNamespace:
        return rendering

    job_id = "0123456789abcdef"
    monkeypatch.setattr(progress_module, "queue_of", lambda _: SimpleNamespace(state=state))
    clock = [0.0]
    messages = ProgressMessages(cast(discord.Client, None), monotonic=lambda: clock[0])
    followup = _GatedFollowup()
    interaction = SimpleNamespace(
        created_at=datetime.datetime.now(datetime.UTC),
        guild_id=1,
        channel_id=2,
        followup=followup,
        extras={},  # not from the gateway: no receipt (``received_at``)
        data=None,
    )
    shown = asyncio.ensure_future(
        messages.show_queued(job_id, cast(Any, interaction), spoiler=False, private=False)
    )
    await asyncio.wait_for(followup.edit_started.wait(), timeout=10)
    clock[0] += PROGRESS_EDIT_INTERVAL_S
    messages.progress(job_id, StepProgress(step=1, total_steps=4, elapsed_s=1.0))
    followup.gates[0].set()  # "thinking…" is replaced; the tick's edit is slow
    try:
        await asyncio.wait_for(shown, timeout=10)
        assert len(followup.gates) == 2  # the tick's edit is in flight
    finally:
        for gate in followup.gates:
            gate.set()
        await messages._watched[job_id].settle()


async def test_a_pointer_edit_that_finds_the_progress_message_gone_withdraws_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unknown_message = discord.NotFound(
        cast(Any, SimpleNamespace(status=404, reason="")), {"code": 10008, "message": "Unknown"}
    )

    async def edit(**fields: Any) -> None:
        raise unknown_message

    message = SimpleNamespace(edit=edit)
    channel = SimpleNamespace(get_partial_message=lambda _: message)
    client = SimpleNamespace(get_partial_messageable=lambda _: channel)
    messages = ProgressMessages(cast(discord.Client, client))
    gone: list[tuple[str, int | None, int | None, int | None]] = []

    async def progress_gone(
        job_id: str, guild_id: int, channel_id: int | None, message_id: int | None
    ) -> None:
        gone.append((job_id, guild_id, channel_id, message_id))

    monkeypatch.setattr(messages, "_progress_gone", progress_gone)
    messages.point_to_result("job", _POINTER)
    await asyncio.gather(*messages._pointers)
    assert gone == [("job", 1, 2, 5)]


async def test_a_pointer_edit_discord_does_not_answer_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def edit(**fields: Any) -> None:
        await asyncio.Event().wait()  # never answered (a long 429, an outage)

    message = SimpleNamespace(edit=edit)
    channel = SimpleNamespace(get_partial_message=lambda _: message)
    client = SimpleNamespace(get_partial_messageable=lambda _: channel)
    monkeypatch.setattr(progress_module, "CHANNEL_CHECK_TIMEOUT_S", 0.01)
    messages = ProgressMessages(cast(discord.Client, client))
    messages.point_to_result("job", _POINTER)
    await asyncio.wait_for(asyncio.gather(*messages._pointers), timeout=10)
    assert not messages._pointers


def _pointed_through(edit: Any) -> ProgressMessages:
    message = SimpleNamespace(edit=edit)
    channel = SimpleNamespace(get_partial_message=lambda _: message)
    client = SimpleNamespace(get_partial_messageable=lambda _: channel)
    return ProgressMessages(cast(discord.Client, client))


async def test_a_pointer_edit_s_unexpected_error_is_logged_with_its_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def edit(**fields: Any) -> None:
        raise ConnectionResetError("the session is closed")

    messages = _pointed_through(edit)
    messages.point_to_result("job7", _POINTER)
    (pointer,) = messages._pointers
    await asyncio.wait([pointer], timeout=10)
    assert pointer.exception() is None  # not left to asyncio's "never retrieved"
    assert any("job7" in record.getMessage() for record in caplog.records)


async def test_closing_cancels_the_pointer_edits_in_flight() -> None:
    async def edit(**fields: Any) -> None:
        await asyncio.Event().wait()  # still waiting on Discord as Easel stops

    messages = _pointed_through(edit)
    messages.point_to_result("job", _POINTER)
    (pointer,) = messages._pointers
    await asyncio.wait_for(messages.close(), timeout=10)
    assert pointer.cancelled()


def test_a_restarts_delivery_takes_only_the_interactions_first_answer_for_its_progress() -> None:
    """The journal knows the job's posts in its channel; its progress message is the one
    Discord made as the interaction's first answer, never a later /show of it."""
    asked_at = 1_800_000_000.0

    def made_after(seconds: float) -> int:
        moment = datetime.datetime.fromtimestamp(asked_at + seconds, datetime.UTC)
        return discord.utils.time_snowflake(moment)

    def restored(*posted: int) -> FinishedJob:
        return FinishedJob(
            job_id="job",
            kind="imagine",
            succeeded=True,
            error=None,
            request=RenderRequest(prompt="a barn"),
            user_id=7,
            guild_id=1,
            channel_id=2,
            application_id=3,
            interaction_token=None,  # blanked: expired
            interaction_created_at=asked_at,
            images=(),
            posted_ids=posted,
        )

    answer, show = made_after(0.5), made_after(60)
    assert _original_response_recorded(restored(answer, show)) == answer
    assert _original_response_recorded(restored(show)) is None  # "thinking…" never recorded
    assert _original_response_recorded(restored()) is None


async def test_a_failed_delivery_s_reply_is_not_sent_its_place_again() -> None:
    """Its first edit left "thinking…"; its delivery failed and is to be tried again: a
    notice's ``replace_thinking`` puts no "Queued" with Cancel over what that try left."""
    followup = _SlowFollowup()
    followup.let_through.set()
    watched = _watched_through(followup)
    watched.schedule("⏳ Queued", discord.ui.View(timeout=None))
    await watched.settle()  # answered with no message: "thinking…" left
    results = DiscordResults(cast(discord.Client, None))
    results._watched["job"] = watched

    async def fails(*args: Any) -> Any:
        raise ConnectionError("the post's answer was lost")

    results._posted = fails  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await results._post_result(cast(FinishedJob, SimpleNamespace(job_id="job")), None)
    assert results._watched["job"] is watched  # kept for the retry
    assert not await results.replace_thinking("job")
    assert followup.sent == [("⏳ Queued", False)]


async def test_a_progress_message_whose_record_fails_still_gets_its_later_edits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[str] = []

    class Followup:
        async def edit_message(self, message_id: Any, *, content: str, **fields: Any) -> Any:
            sent.append(content)
            return SimpleNamespace(id=7)

    async def journal_locked(message: Any) -> None:
        raise RuntimeError("database is locked")

    watched = _Watched(
        cast(discord.Webhook, Followup()),
        lambda: True,
        False,
        on_deleted=_nothing,
        on_landed=journal_locked,
    )
    view = discord.ui.View(timeout=None)
    watched.schedule("⏳ Queued", view)
    await watched.settle()
    watched.schedule("🎨 Rendering…", view)
    await watched.settle()
    assert sent == ["⏳ Queued", "🎨 Rendering…"]
    assert "the progress message 7 could not be recorded" in caplog.text


class _RecordingFollowup:
    """An interaction's webhook that records each edit's text at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def edit_message(self, message_id: Any, *, content: str, **fields: Any) -> None:
        self.sent.append(content)


def _queued(position: int, *, at_least: bool = False, eta_s: float = 60.0) -> JobState:
    return JobState(JobStatus.QUEUED, position=position, eta_s=eta_s, at_least=at_least)


async def test_places_are_shown_again_when_moved_enough_and_at_most_so_many_at_once() -> None:
    """A round looks again at the queued places last looked at ``place_refresh_s`` ago, in one
    call for all, the longest unlooked at first; it shows again those that moved by a tenth
    or more, or came into the counted places, up to the edits allowed: the rest go next."""
    clock = [60.0]
    messages = ProgressMessages(cast(discord.Client, None), monotonic=lambda: clock[0])
    names = "rghabcdef"  # from the longest unlooked at; "r" has started rendering since

    def job_id(name: str) -> str:
        return f"{ord(name):016x}"

    shown = {"g": _queued(20), "h": _queued(100, at_least=True), "r": _queued(3)}
    shown |= {name: _queued(20) for name in "abcdef"}
    followups: dict[str, _RecordingFollowup] = {}
    for checked_at, name in enumerate(names, start=-len(names)):
        followup = followups[name] = _RecordingFollowup()
        watched = messages._watched[job_id(name)] = _watched_through(cast(Any, followup))
        watched.place_shown, watched.place_checked_at = shown[name], float(checked_at)
    now_at = {"g": _queued(19), "h": _queued(40)} | {name: _queued(10) for name in "abcdef"}
    asked: list[str] = []

    def queued_places(job_ids: Any) -> dict[str, JobState]:
        asked.append("".join(chr(int(asked_id, 16)) for asked_id in job_ids))
        return {job_id(n): now_at[n] for n in asked[-1] if n in now_at}

    async def sent() -> dict[str, list[str]]:
        await asyncio.gather(*(watched.settle() for watched in messages._watched.values()))
        return {name: followup.sent for name, followup in followups.items() if followup.sent}

    assert messages._show_places_again(queued_places, edits_allowed=5)
    assert asked == [names]
    assert await sent() == {
        "h": ["⏳ Queued — position 41, done in about 60 s."],  # into the counted places
        **{name: ["⏳ Queued — position 11, done in about 60 s."] for name in "abcd"},
    }
    clock[0] = 61.0  # the two left over go first; the others were looked at a second ago
    assert messages._show_places_again(queued_places, edits_allowed=5)
    assert asked[1] == "ref"
    assert sorted(await sent()) == sorted("habcdef")  # "g" moved by less than a tenth
    for watched in messages._watched.values():
        watched.ended = True
    assert not messages._show_places_again(queued_places, edits_allowed=5)


def test_a_place_is_shown_again_across_the_last_counted_place_either_way() -> None:
    """Pushed back past the counted places (promoted or put-back jobs ahead), a job must not
    keep showing the place it had; brought into them, it shows its place."""
    assert _moved_enough(_queued(95), _queued(100, at_least=True))
    assert _moved_enough(_queued(100, at_least=True), _queued(95))
    assert not _moved_enough(_queued(100, at_least=True), _queued(100, at_least=True))
    assert not _moved_enough(_queued(95), _queued(90))  # by less than a tenth


def test_a_wait_that_moved_is_shown_again_at_the_same_place() -> None:
    """The jobs ahead ran longer or shorter than estimated: at the same place (or past the
    count, at the same "over 100"), a wait that moved by a tenth or into another minute is
    shown again; one that reads the same, or moved less within its minute, is not."""
    assert _moved_enough(_queued(5, eta_s=300.0), _queued(5, eta_s=400.0))  # a third more
    assert _moved_enough(_queued(5, eta_s=30.0), _queued(5, eta_s=26.0))  # a tenth and more
    assert _moved_enough(_queued(5, eta_s=605.0), _queued(5, eta_s=595.0))  # another minute
    assert not _moved_enough(_queued(5, eta_s=650.0), _queued(5, eta_s=610.0))  # same minute
    assert not _moved_enough(_queued(5, eta_s=0.2), _queued(5, eta_s=0.6))  # "a moment" both
    far = _queued(100, at_least=True, eta_s=1000.0)
    assert _moved_enough(far, _queued(100, at_least=True, eta_s=1300.0))
    assert _moved_enough(far, _queued(100, at_least=True, eta_s=950.0))  # another minute
    assert not _moved_enough(far, _queued(100, at_least=True, eta_s=1015.0))


async def test_a_round_shows_again_a_wait_that_moved_at_the_same_place() -> None:
    """Through a refresh round: the job's place stayed, its wait did not."""
    clock = [60.0]
    messages = ProgressMessages(cast(discord.Client, None), monotonic=lambda: clock[0])
    followup = _RecordingFollowup()
    watched = messages._watched["0" * 16] = _watched_through(cast(Any, followup))
    watched.place_shown, watched.place_checked_at = _queued(4, eta_s=300.0), 0.0
    assert messages._show_places_again(lambda _: {"0" * 16: _queued(4, eta_s=420.0)}, 5)
    await watched.settle()
    assert followup.sent == ["⏳ Queued — position 5, done in about 420 s."]


async def test_no_places_refresh_starts_once_closed() -> None:
    """A command still answered during the stop shows its place: nothing may follow it then."""
    messages = ProgressMessages(cast(discord.Client, None))
    await messages.close()
    messages._follow_places(lambda job_ids: {})
    assert messages._place_refresh is None


class _RefusingChannel:
    """A channel whose edits land until ``refuse`` is set, then are refused (403)."""

    def __init__(self) -> None:
        self.id = 9
        self.sent: list[tuple[int, str]] = []
        self.refuse = False

    def get_partial_message(self, message_id: int) -> Any:
        async def edit(*, content: str, **fields: Any) -> None:
            if self.refuse:
                answer = SimpleNamespace(status=403, reason="Forbidden")
                raise discord.Forbidden(answer, "Missing Access")  # type: ignore[arg-type]
            self.sent.append((message_id, content))

        return SimpleNamespace(edit=edit)


async def test_a_public_message_past_its_token_is_edited_in_its_channel_until_refused() -> None:
    """Its token ended: a public message goes on through its channel (its latest edit's
    id); once the channel refuses an edit, none is tried again."""
    channel = _RefusingChannel()
    token_alive = [True]
    watched = _Watched(
        cast(discord.Webhook, _LandingFollowup()),
        lambda: token_alive[0],
        False,
        on_deleted=_nothing,
        on_landed=_landed_nowhere,
        channel=lambda: cast(discord.PartialMessageable, channel),
    )
    view = discord.ui.View(timeout=None)
    watched.schedule("⏳ Queued — position 3", view)
    await watched.settle()
    token_alive[0] = False
    watched.place_shown = _queued(2)
    assert watched.editable()
    watched.schedule("⏳ Queued — position 2", view)
    await watched.settle()
    assert channel.sent == [(_MADE_NOW, "⏳ Queued — position 2")]
    channel.refuse = True
    watched.schedule("⏳ Queued — position 1", view)
    await watched.settle()
    assert not watched.editable()
    channel.refuse = False
    watched.schedule("🎨 Rendering…", view)
    await watched.settle()
    assert channel.sent == [(_MADE_NOW, "⏳ Queued — position 2")]


def _made_ago(seconds: float) -> int:
    """The id of a message made ``seconds`` ago (a snowflake says when it was made)."""
    return discord.utils.time_snowflake(
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    )


_MADE_NOW = _made_ago(0)


class _LandingFollowup:
    """An interaction's webhook whose edits land as public message ``_MADE_NOW``."""

    async def edit_message(self, message_id: Any, **fields: Any) -> Any:
        return SimpleNamespace(id=_MADE_NOW, flags=SimpleNamespace(ephemeral=False))


class _Channels:
    """A client's channels, each recording the place edits made through it."""

    def __init__(self) -> None:
        self.edits: list[tuple[int, str]] = []  # (channel, text)

    def get_partial_messageable(self, channel_id: int) -> Any:
        def get_partial_message(message_id: int) -> Any:
            async def edit(*, content: str, **fields: Any) -> None:
                self.edits.append((channel_id, content))

            return SimpleNamespace(edit=edit)

        return SimpleNamespace(id=channel_id, get_partial_message=get_partial_message)


def _past_its_token(messages: ProgressMessages, channel_id: int, shown: JobState) -> _Watched:
    """A public place message whose token ended (its job restored at start-up, say), showing
    ``shown``, edited through channel ``channel_id``."""
    watched = _Watched.restored(_made_ago(60.0), messages._channel(channel_id))
    watched.place_shown = shown
    return watched


async def test_place_edits_through_a_channel_go_out_one_a_second_in_each() -> None:
    """Past their tokens, the places of many jobs made in one channel are edited through it
    one a second, not the bot's whole budget at once (review R_FAUD3: five a second in one
    channel's bucket held a delivery's edits behind 429s); another channel's go on alongside."""
    channels, clock = _Channels(), [1000.0]
    messages = ProgressMessages(cast(discord.Client, channels), monotonic=lambda: clock[0])
    await messages.close()  # the rounds are run by hand
    places = {f"{index:016x}": _queued(index + 1) for index in range(4)}
    for index, job_id in enumerate(places):
        messages._watched[job_id] = _past_its_token(messages, 9, _queued(index + 3))
    places["00000000000000ff"] = _queued(7)
    messages._watched["00000000000000ff"] = _past_its_token(messages, 10, _queued(9))

    def queued_places(job_ids: Any) -> dict[str, JobState]:
        return {job_id: places[job_id] for job_id in job_ids}

    async def round_after(seconds: float) -> list[int]:
        clock[0] += seconds
        before = len(channels.edits)
        assert messages._show_places_again(queued_places, edits_allowed=5)
        await asyncio.gather(*(watched.settle() for watched in messages._watched.values()))
        return [channel for channel, _ in channels.edits[before:]]

    assert await round_after(1.0) == [9, 10]
    assert await round_after(0.5) == []
    assert [await round_after(1.0) for _ in range(3)] == [[9], [9], [9]]
    assert sorted(channels.edits) == sorted(
        (10 if job_id.endswith("ff") else 9, queued_text(state)) for job_id, state in places.items()
    )


async def test_a_restored_place_is_edited_only_once_it_moves() -> None:
    """A job restored queued at start-up is shown from the place it has then: its message is
    edited through its channel once it moves, not at the first look (review R_FAUD3: every
    restored job's first look forced an edit, many at once in one channel)."""
    channels, clock = _Channels(), [1000.0]
    messages = ProgressMessages(cast(discord.Client, channels), monotonic=lambda: clock[0])
    await messages.close()  # the rounds are run by hand
    job_id, places = "00000000000000a1", {"00000000000000a1": _queued(3)}

    def queued_places(job_ids: Any) -> dict[str, JobState]:
        return {job_id: places[job_id] for job_id in job_ids if job_id in places}

    messages.follow_restored([(job_id, 9, _made_ago(60.0))], queued_places)
    assert messages._show_places_again(queued_places, edits_allowed=5)
    await messages._watched[job_id].settle()
    assert channels.edits == []
    places[job_id] = _queued(2)
    clock[0] += messages.place_refresh_s
    messages._show_places_again(queued_places, edits_allowed=5)
    await messages._watched[job_id].settle()
    assert channels.edits == [(9, queued_text(_queued(2)))]


class _OldMessageChannel:
    """A channel refusing edits of an old message: Discord's 429 "Maximum number of edits to
    messages older than 1 hour reached" (code 30046)."""

    def __init__(self) -> None:
        self.id, self.tries = 9, 0

    def get_partial_message(self, message_id: int) -> Any:
        async def edit(**fields: Any) -> None:
            self.tries += 1
            answer = SimpleNamespace(status=429, reason="Too Many Requests")
            refusal = {"code": 30046, "message": "Maximum number of edits to messages older"}
            raise discord.HTTPException(answer, refusal)  # type: ignore[arg-type]

        return SimpleNamespace(edit=edit)


async def test_an_old_messages_spent_edits_stop_its_place_edits() -> None:
    """Discord's refusal of more edits of a message older than an hour stops its place edits
    as a 403 does (review R_FAUD3: tried again at every move)."""
    channel = _OldMessageChannel()
    watched = _Watched.restored(
        _made_ago(30 * 60), lambda: cast(discord.PartialMessageable, channel)
    )
    view = discord.ui.View(timeout=None)
    for place in (4, 3, 2):
        watched.schedule(f"⏳ Queued — position {place}", view)
        await watched.settle()
    assert channel.tries == 1
    assert not watched.editable()


@pytest.mark.parametrize(("age_min", "edited"), [(49.0, True), (51.0, False)])
async def test_no_place_edit_goes_through_a_channel_once_the_message_is_50_minutes_old(
    age_min: float, edited: bool
) -> None:
    """Discord allows few edits of a message older than an hour: its place is edited no more
    from its 50th minute on (its snowflake says when it was made, read on the bot's wall
    clock), which leaves them to the pointer to its result (review R_FAUD3)."""
    channel = _RefusingChannel()
    wall_clock = [time.time()]
    watched = _Watched.restored(
        _made_ago(0),
        lambda: cast(discord.PartialMessageable, channel),
        wall_clock=lambda: wall_clock[0],
    )
    wall_clock[0] += age_min * 60
    assert watched.editable() is edited
    watched.schedule("⏳ Queued — position 2", discord.ui.View(timeout=None))
    await watched.settle()
    assert len(channel.sent) == int(edited)


class _EphemeralFollowup(_RecordingFollowup):
    """An interaction's webhook whose edits land as an ephemeral message."""

    async def edit_message(self, message_id: Any, *, content: str, **fields: Any) -> Any:
        await super().edit_message(message_id, content=content)
        return SimpleNamespace(id=_MADE_NOW, flags=SimpleNamespace(ephemeral=True))


async def test_a_private_message_says_in_its_tokens_last_minute_where_the_result_goes() -> None:
    """A private job whose token ends within the minute says so, and where its result goes:
    a queued one's place is said last; one just handed to a device is not told "Queued" then
    (review R_FAUD3), its progress goes on, each edit saying until when (the token's end as a
    Discord timestamp, true whenever the last one landed: R_FX35 D4), so a render that
    outlasts the token never freezes at "Rendering" (AUD35 F1)."""
    clock = [1000.0]
    messages = ProgressMessages(cast(discord.Client, None), monotonic=lambda: clock[0])
    await messages.close()  # the rounds are run by hand
    followup, job_id = _EphemeralFollowup(), "00000000000000a1"
    watched = _Watched(
        cast(discord.Webhook, followup),
        lambda: True,
        False,
        on_deleted=_nothing,
        on_landed=_landed_nowhere,
        last_minute=LastMinute(lambda: True, 1_700_000_840.9),
    )
    watched.place_shown = _queued(1)
    messages._watched[job_id] = watched
    messages._show_places_again(lambda job_ids: {}, edits_allowed=5)  # rendering now
    await watched.settle()
    ends = "Its progress shows here until <t:1700000840:T>."
    direct = "if it is posted before <t:1700000840:T>, else to your direct messages if they are"
    assert followup.sent[-1].startswith(f"🎨 Rendering…\n{ends}") and direct in followup.sent[-1]
    # Said once, not each round: the rounds end (its progress edits say it from now on).
    assert not messages._show_places_again(lambda job_ids: {}, edits_allowed=5)
    assert len(followup.sent) == 1
    clock[0] += PROGRESS_EDIT_INTERVAL_S
    messages.progress(job_id, StepProgress(step=5, total_steps=20, elapsed_s=1.0))
    await watched.settle()
    assert followup.sent[-1].startswith(f"🎨 Rendering — 25% (step 5/20).\n{ends}")
    assert not watched.last_word_said  # its progress goes on while the token lives
    watched.place_shown = _queued(2)  # put back in the queue (its device lost)
    messages._show_places_again(lambda job_ids: {job_id: _queued(2)}, edits_allowed=5)
    await watched.settle()
    assert "Its place is shown here no more" in followup.sent[-1]
    assert watched.last_word_said


def _received_now(clock: list[float]) -> Any:
    """A command's interaction, received now on ``clock`` (the monotonic one)."""
    return SimpleNamespace(extras={_RECEIVED_AT: clock[0]}, data={})


async def test_a_receipt_judges_its_token_for_a_day_whatever_else_comes() -> None:
    """The host's wall clock ten minutes behind Discord's: a token is judged from its receipt,
    dead at 14 minutes, though another command's receipt comes after (R_FX35 D3), and after
    its delivery (a /forget-me's retraction of its post judges it then: RF1 LOW-2); a receipt
    RECEIPTS_KEPT_S old goes at the next, and its token is judged on the wall clock."""
    monotonic, discord_now = [1000.0], [1_700_000_000.0]
    messages = ProgressMessages(
        cast(discord.Client, None),
        wall_clock=lambda: discord_now[0] - 600,
        monotonic=lambda: monotonic[0],
    )
    made_at = discord_now[0]
    messages._received("a", _received_now(monotonic))
    monotonic[0] += INTERACTION_TOKEN_LIFETIME_S + 30
    discord_now[0] += INTERACTION_TOKEN_LIFETIME_S + 30
    messages._received("b", _received_now(monotonic))  # another member's command
    assert not messages._alive("a", made_at)
    assert not messages._token_ends_soon("a", made_at)
    assert messages._alive("b", discord_now[0])
    on_receipt = messages._token_age_s("a", made_at)
    monotonic[0] += RECEIPTS_KEPT_S
    discord_now[0] += RECEIPTS_KEPT_S
    assert messages._token_age_s("a", made_at) == on_receipt + RECEIPTS_KEPT_S
    messages._received("c", _received_now(monotonic))
    assert messages._token_age_s("a", made_at) == discord_now[0] - 600 - made_at


@pytest.mark.parametrize(
    ("received_ago_s", "made_ago_s", "alive"), [(1, 3600, True), (841, 0, False)]
)
def test_an_answers_token_is_judged_from_its_receipt_not_the_hosts_wall_clock(
    received_ago_s: float, made_ago_s: float, alive: bool
) -> None:
    """/forget-me's answer is edited with its posts' outcome while its token lives, judged as
    a job's (R_FX35 D5): the wall clock an hour ahead (made an hour ago by it), or behind; on
    the results' clocks, so moving them (``tests.e2e.helpers.past_the_tokens``) ends it."""
    monotonic, wall = [1000.0], [1_700_000_000.0]
    messages = ProgressMessages(
        cast(discord.Client, None), wall_clock=lambda: wall[0], monotonic=lambda: monotonic[0]
    )
    made_at = datetime.datetime.fromtimestamp(wall[0] - made_ago_s, datetime.UTC)
    interaction = cast(
        discord.Interaction[Any],
        SimpleNamespace(
            extras={_RECEIVED_AT: monotonic[0] - received_ago_s}, data={}, created_at=made_at
        ),
    )
    assert messages.token_alive_of(interaction) is alive
    monotonic[0] += INTERACTION_TOKEN_LIFETIME_S
    wall[0] += INTERACTION_TOKEN_LIFETIME_S
    assert not messages.token_alive_of(interaction)
