"""What Easel stores, through the fake Discord: /forget-me erases uploads and pictures and
anonymises the ledger; a start prunes what retention no longer keeps."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bot.jobs.retention import Retention, quota_window
from bot.settings import Settings
from db import jobs as journal
from db import quotas as ledger
from db.database import connect
from inference.types import RenderRequest
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    forget_me,
    has_picture,
    imagine,
)
from tests.e2e.test_edits import source_png
from tests.fake_discord import FakeDiscord

FORTY_DAYS_S = 40 * 86400.0


async def test_forget_me_erases_uploads_and_anonymises_the_ledger(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    member, someone_else, guild = fake_discord.user_id, fake_discord.owner_id, fake_discord.guild_id
    fox = ("fox.png", source_png())
    async with start_easel() as bot:
        inputs = bot.settings.inputs_dir
        uploads: dict[int, Path] = {}
        for user in (member, someone_else):
            upscale = await fake_discord.invoke_command(
                "upscale", {"upscaler": "lanczos"}, attachments={"image": fox}, user=user
            )
            await upscale.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            [uploads[user]] = set(inputs.iterdir()) - set(uploads.values())
        await imagine(fake_discord, "a cat", user=member)
        ledger_conn = await connect(bot.settings.database_path)
        try:
            # The member's job of last month, settled: no quota period counts it any more.
            long_ago = time.time() - FORTY_DAYS_S
            await ledger.reserve(ledger_conn, "lastmonth", member, guild, 3, 1.0, long_ago)
            await ledger.commit(ledger_conn, "lastmonth", 1.0, long_ago)

            forgotten = await (await forget_me(fake_discord)).wait_for_answer()

            assert forgotten.is_ephemeral
            assert (
                "erased 2 jobs, 2 stored pictures, 1 uploaded picture and your settings. "
                "Removing 2 posted messages from channels… Your older quota use no longer "
                "carries your id (the server keeps the amounts)." in forgotten.content
            )
            # This month's jobs still count towards the member's limits until the month ends.
            assert "What still counts towards your current limits keeps your id" in (
                forgotten.content
            )
            assert "then loses it too." in forgotten.content
            assert "(s)" not in forgotten.content
            assert list(inputs.iterdir()) == [uploads[someone_else]]
            since = 0.0
            assert (await ledger.usage(ledger_conn, 0, guild, since)).images == 3
            assert (await ledger.usage(ledger_conn, member, guild, since)).images == 2
            assert (await ledger.usage(ledger_conn, someone_else, guild, since)).images == 1

            _, period_end = quota_window(time.time())
            later = Retention(
                ledger_conn, bot.settings.images_dir, inputs, 0, clock=lambda: period_end
            )
            await later.prune()
            assert (await ledger.usage(ledger_conn, member, guild, since)).images == 0
            assert (await ledger.usage(ledger_conn, 0, guild, since)).images == 5
        finally:
            await ledger_conn.close()


async def test_a_start_prunes_what_retention_no_longer_keeps(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    settings = easel_settings_for_test
    long_ago = time.time() - FORTY_DAYS_S  # EASEL_RETENTION_DAYS is 30 by default
    old = "0123456789abcdef"
    conn = await connect(settings.database_path)
    try:  # a job made, posted and now past its time
        request = RenderRequest("a cat", seed=1, steps=2)
        await journal.insert_job(
            conn,
            journal.NewJob(old, "imagine", fake_discord.user_id, None, None, request.to_json(), 0),
        )
        await journal.mark_done(conn, old, [], 1.0, long_ago)
        await journal.mark_delivered(conn, old, long_ago)
    finally:
        await conn.close()
    pictures = settings.images_dir / old
    pictures.mkdir(parents=True)
    (pictures / "0.png").write_bytes(b"a picture")
    os.utime(pictures, (long_ago, long_ago))

    async with start_easel() as bot:
        async with asyncio.timeout(10):
            while pictures.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert await bot.services.history.job(old) is None
