"""What of a member stays in Discord after their /forget-me. Easel's posts of the member's
pictures go also once retention has deleted their job: its result, another member's U1 repost
of it and the copy another member asked for with DM me (each holds the picture and its
settings); the member's own copy by DM stays, theirs to delete. A U1 repost the member asked
for of another's picture (that maker's post, which the member's /forget-me does not reach)
never named them. Through the fake Discord with a real tiny render, retention run by a start."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time

from bot.settings import Settings
from db import history as store
from db.database import connect
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, forget_me, job_id_of
from tests.e2e.test_forget_me_dm_copies import dm_copy
from tests.fake_discord import FakeDiscord
from tests.support.pictures import has_picture
from tests.support.polling import POLLED_WAIT_S, until

OTHER = 7203
FORTY_DAYS_S = 40 * 86400.0  # EASEL_RETENTION_DAYS is 30 by default


async def test_forget_me_deletes_the_posts_of_jobs_retention_deleted(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    async with start_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "my very personal prompt", **QUICK, "count": 2}
        )
        grid = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        pick = await fake.click(grid, label="U1", user=OTHER)
        picked = await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        others_copy = await dm_copy(fake, grid, OTHER)
        own_copy = await dm_copy(fake, grid, fake.user_id)
    job = job_id_of(grid)
    long_ago = time.time() - FORTY_DAYS_S
    with sqlite3.connect(easel_settings_for_test.database_path) as raw:
        raw.execute(
            "UPDATE jobs SET created_at = ?, finished_at = ?, delivered_at = ? WHERE id = ?",
            (long_ago, long_ago, long_ago, job),
        )
    raw.close()  # the context manager commits, and leaves it open

    async with start_easel() as bot:  # its retention round deletes the job
        history = bot.services.history
        async with asyncio.timeout(POLLED_WAIT_S):
            while await history.job(job) is not None:  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.05)
        forget = await forget_me(fake)
        forgotten = await forget.wait_for_original(lambda m: not m.is_loading)
        assert "Removing 3 posted messages" in forgotten.content, forgotten.content
        await until(lambda: grid.deleted and picked.deleted and others_copy.deleted)
        told = await forget.wait_for_original(lambda m: "Removed" in m.content)
        assert "Removed 3 of 3 posted messages" in told.content, told.content
        assert not own_copy.deleted
    conn = await connect(easel_settings_for_test.database_path)
    try:  # nothing kept names the member
        assert await store.count_rows_of_user(conn, fake.user_id) == 0
    finally:
        await conn.close()


async def test_a_repost_of_anothers_picture_names_no_one_who_could_forget_it(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "the owner's castle", **QUICK, "count": 2}, user=fake.owner_id
        )
        grid = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        pick = await fake.click(grid, label="U1", user=fake.user_id)
        picked = await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert not picked.is_ephemeral
        seeded = rf"Picture 1 of `{job_id_of(grid)}` \(seed \d+\)"
        assert re.fullmatch(seeded, picked.content), picked.content  # no <@member>
