"""A job's progress edits go one at a time, and ticks that come while one is in flight replace
each other: a slow Discord gets the edit in flight and then only the newest text (with the
newest preview), and ``settle`` waits for no backlog of stale texts. ``show_queued`` returns
once "thinking…" is replaced, however long the edits that follow take. A pointer edit that
finds the progress message gone withdraws the job, as a progress edit does."""

from __future__ import annotations

import asyncio
import datetime
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from cogs.results import progress as progress_module
from cogs.results.progress import PROGRESS_EDIT_INTERVAL_S, ProgressMessages, _Watched
from inference.types import StepProgress


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


async def test_ticks_during_a_slow_edit_send_only_the_newest_text() -> None:
    followup = _SlowFollowup()
    watched = _Watched(cast(discord.Webhook, followup), lambda: True, False, on_deleted=_nothing)
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
    gone: list[tuple[str, int | None, int | None]] = []

    async def progress_gone(job_id: str, guild_id: int, channel_id: int | None) -> None:
        gone.append((job_id, guild_id, channel_id))

    monkeypatch.setattr(messages, "_progress_gone", progress_gone)
    progress = SimpleNamespace(
        id=5, channel=SimpleNamespace(id=2), flags=SimpleNamespace(ephemeral=False)
    )
    messages.point_to_result(cast(discord.WebhookMessage, progress), "job", 1, 9)
    await asyncio.gather(*messages._pointers)
    assert gone == [("job", 1, 2)]


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
    progress = SimpleNamespace(
        id=5, channel=SimpleNamespace(id=2), flags=SimpleNamespace(ephemeral=False)
    )
    messages.point_to_result(cast(discord.WebhookMessage, progress), "job", 1, 9)
    await asyncio.wait_for(asyncio.gather(*messages._pointers), timeout=10)
    assert not messages._pointers


def _pointed_through(edit: Any) -> ProgressMessages:
    message = SimpleNamespace(edit=edit)
    channel = SimpleNamespace(get_partial_message=lambda _: message)
    client = SimpleNamespace(get_partial_messageable=lambda _: channel)
    return ProgressMessages(cast(discord.Client, client))


_PUBLIC_PROGRESS = SimpleNamespace(
    id=5, channel=SimpleNamespace(id=2), flags=SimpleNamespace(ephemeral=False)
)


async def test_a_pointer_edit_s_unexpected_error_is_logged_with_its_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def edit(**fields: Any) -> None:
        raise ConnectionResetError("the session is closed")

    messages = _pointed_through(edit)
    messages.point_to_result(cast(discord.WebhookMessage, _PUBLIC_PROGRESS), "job7", 1, 9)
    (pointer,) = messages._pointers
    await asyncio.wait([pointer], timeout=10)
    assert pointer.exception() is None  # not left to asyncio's "never retrieved"
    assert any("job7" in record.getMessage() for record in caplog.records)


async def test_closing_cancels_the_pointer_edits_in_flight() -> None:
    async def edit(**fields: Any) -> None:
        await asyncio.Event().wait()  # still waiting on Discord as Easel stops

    messages = _pointed_through(edit)
    messages.point_to_result(cast(discord.WebhookMessage, _PUBLIC_PROGRESS), "job", 1, 9)
    (pointer,) = messages._pointers
    await asyncio.wait_for(messages.close(), timeout=10)
    assert pointer.cancelled()
