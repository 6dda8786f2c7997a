"""/forget-me outlives a restore, over the fake Discord with tiny real renders: a backup taken
before a member's /forget-me, put back by hand (its pictures too, or the database alone), holds
what the request erased; the next start erases it again from ``forget-me.log``, which no backup
holds, before any member is served, and tells no one again. What the member makes since stays,
start after start."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from bot.forget_me_log import FILE_NAME
from bot.settings import Settings
from tests.e2e.helpers import StartEasel, forget_me, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord
from tests.support.backups import backed_up, put_back_by_hand


@pytest.mark.parametrize("pictures_put_back", [True, False])
async def test_a_private_result_forgotten_after_a_backup_stays_erased_after_its_restore(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pictures_put_back: bool,
) -> None:
    fake = fake_discord
    settings = easel_settings_for_test
    backup = tmp_path / "backup"
    async with start_easel():
        await reply_to(fake, "settings", {"private_results": True})
        result = await imagine(fake, "a private secret cat", seed=3)
        assert result.is_ephemeral  # no post in the channel: nothing there to find it gone
        job_id = job_id_of(result)
        picture = settings.images_dir / job_id / "0.png"
        assert picture.is_file()
        backed_up(settings.database_path, backup / "easel.sqlite3")
        shutil.copytree(settings.images_dir, backup / "images")  # as `rsync -a` does
        forget = await (await forget_me(fake)).wait_for_answer()
        assert forget.content.startswith("Done: erased 1 job, 1 stored picture")
        assert not picture.exists()

    put_back_by_hand(backup / "easel.sqlite3", settings.database_path)
    if pictures_put_back:
        shutil.copytree(backup / "images", settings.images_dir, dirs_exist_ok=True)
        assert picture.is_file()
    with caplog.at_level(logging.WARNING, logger="bot.history"):
        async with start_easel() as bot:
            # Erased before the start let any member in.
            assert not picture.exists()
            shown = await reply_to(fake, "show", {"job_id": job_id})
            assert shown.content.startswith(f"You have no job `{job_id}`")
            assert not shown.attachments
            assert job_id not in (await reply_to(fake, "history")).content
            assert "held what 1 request(s) recorded in" in caplog.text
            # Nothing left to finish, and nobody told again.
            assert await bot.services.history.unfinished_erasures() == []
            assert not [m for m in fake.messages.values() if "/forget-me" in m.content]
            # The restored settings went too (private results); those made since stay.
            public = await imagine(fake, "a public dog after the restore", seed=4)
            assert not public.is_ephemeral
            await reply_to(fake, "settings", {"private_results": True})
            since = job_id_of(await imagine(fake, "a private dog after the restore", seed=5))

    async with start_easel() as bot:  # every start reads the record again
        assert await bot.services.history.forget_again() == 0
        history = (await reply_to(fake, "history")).content
        assert job_id_of(public) in history and since in history
        settings_now = await bot.services.member_settings.get(fake.user_id)
        assert settings_now.private_results
    assert (settings.data_dir / FILE_NAME).read_text().count("\n") == 1  # the one request


async def test_a_post_forgotten_after_a_backup_is_not_withdrawn_again_after_its_restore(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    tmp_path: Path,
) -> None:
    """The restored database links the job to its post, which /forget-me deleted: the start
    erases the job, and the post's delete, left to its sweep, finds it gone (one 404, as Discord
    answers; it may have been refused and left pending in the database the backup replaced).
    Nothing shows the job again, nor says a moderator removed it."""
    fake = fake_discord
    settings = easel_settings_for_test
    backup = tmp_path / "backup" / "easel.sqlite3"
    async with start_easel():
        result = await imagine(fake, "a public secret cat", seed=3)
        job_id = job_id_of(result)
        backed_up(settings.database_path, backup)
        forget = await forget_me(fake)
        await forget.wait_for_original(lambda m: "Removed" in m.content)
        assert result.deleted

    put_back_by_hand(backup, settings.database_path)
    async with start_easel():
        shown = await reply_to(fake, "show", {"job_id": job_id})
        assert shown.content.startswith(f"You have no job `{job_id}`")
        assert job_id not in (await reply_to(fake, "history")).content
        # The /show answer alone names the job: nothing posted of it, no "a moderator removed".
        named = [m.id for m in fake.messages.values() if job_id in m.content and not m.deleted]
        assert named == [shown.id]
        gone = f"unknown-resource: message {result.id} is not in channel {result.channel_id}"
        for _ in range(1200):  # the start's sweep of posts left to delete, in the background
            if fake.violations:
                break
            await asyncio.sleep(0.05)
        assert fake.take_violations() == [gone]
