"""/blend acknowledges before it reads its uploads: downloading, decoding and checking five
large pictures takes seconds, past Discord's 3 s. Once its job is journaled, the uploads are
the job's, whatever fails after."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from bot.settings import Settings
from cogs.results.progress import ProgressMessages
from db.database import connect
from tests.conftest import ErrorLogs
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.e2e.test_edits import inputs_of
from tests.e2e.test_image_prompts import picture_png, tiny_models_dir  # noqa: F401 (a fixture)
from tests.fake_discord import FakeDiscord

CALLBACK_ROUTE = "/interactions/{interaction}/{token}/callback"
UNFINISHED = ("queued", "running")


async def test_blend_acknowledges_before_reading_its_uploads(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    read = discord.Attachment.read
    acks_when_read: list[int] = []  # the interaction callbacks Discord had when each was read

    async def counted_read(self: discord.Attachment, **options: Any) -> bytes:
        acks_when_read.append(len(fake.calls_to("POST", CALLBACK_ROUTE)))
        return await read(self, **options)

    monkeypatch.setattr(discord.Attachment, "read", counted_read)
    uploads = {
        f"image{index}": (f"p{index}.png", picture_png(colour))
        for index, colour in enumerate(("red", "green", "blue"), start=1)
    }
    async with start_easel():
        handle = await fake.invoke_command("blend", {"prompt": "--steps 2"}, attachments=uploads)
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert acks_when_read == [1, 1, 1]


async def test_a_blend_journaled_keeps_its_uploads_whatever_fails_after(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Showing the queued job's place fails once it is journaled (a database write, a
    Discord call): the job renders from its uploads all the same."""
    fake = fake_discord
    error_logs.expect(r"internal error [0-9a-f]{8} in /blend")

    async def fails(*args: object, **options: object) -> None:
        raise RuntimeError("the database is locked")

    monkeypatch.setattr(ProgressMessages, "show_queued", fails)
    uploads = {
        f"image{index}": (f"p{index}.png", picture_png(colour))
        for index, colour in enumerate(("red", "green"), start=1)
    }
    async with start_easel() as bot:
        handle = await fake.invoke_command("blend", {"prompt": "--steps 2"}, attachments=uploads)
        await handle.wait_for_followup()  # the internal error, told
        assert len(inputs_of(easel_settings_for_test)) == 2
        conn = await connect(easel_settings_for_test.database_path)
        try:
            [(job_id,)] = await conn.execute_fetchall("SELECT id FROM jobs")
        finally:
            await conn.close()
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            while (state := await bot.queue.state(job_id)) and state.status in UNFINISHED:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert state is not None and state.status == "done", state
        # The error's report leaves a journaled job's response in place (a neutral line, never
        # deleted: a deletion reads as a moderator's), and the result is posted in it.
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert fake.take_violations() == []
