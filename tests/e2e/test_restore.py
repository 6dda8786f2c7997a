"""A data folder put back from a backup, over the fake Discord with tiny real renders: a job the
backup held queued was rendered and posted since, so the restored start ends it, refunded,
posts nothing of it, and /history says it was lost in a restore; a start refuses pictures put
back before their database; and a database ruined by a stale -wal is named, with its remedy,
by a real ``easel run``, and mended by ``easel restore``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from bot.cli.restore import restore
from bot.restores import LOST_IN_A_RESTORE
from bot.settings import Settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    bot_process,
    calls_held,
    imagine,
    job_id_of,
    journaled_before_start,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.backups import backed_up, left_with_a_stale_wal, put_back_by_hand


def ledger_kinds(database: Path, job_id: str) -> set[str]:
    with contextlib.closing(sqlite3.connect(database)) as raw:
        rows = raw.execute("SELECT kind FROM quota_ledger WHERE job_id = ?", (job_id,))
        return {str(row[0]) for row in rows}


def posts_naming(fake: FakeDiscord, job_id: str) -> list[StoredMessage]:
    return [m for m in fake.messages.values() if job_id in m.content and not m.deleted]


async def started_on_the_restore(
    fake: FakeDiscord, start_easel: StartEasel, job_id: str, posted: StoredMessage
) -> None:
    """A start on the data folder put back: ``job_id``, which the backup held unfinished, is
    posted no more than it was (``posted``), and /history says it was lost in the restore."""
    async with start_easel():
        # One device, one member: a job made now renders after the ones the queue restored.
        await imagine(fake, "a cat after the restore", seed=2)
        assert posts_naming(fake, job_id) == [posted]
        history = await reply_to(fake, "history")
        assert f"`{job_id}`" in history.content
        assert f"cancelled: {LOST_IN_A_RESTORE}; not counted" in history.content


@pytest.mark.parametrize("how", ["easel-restore", "by-hand"])
async def test_a_job_queued_in_a_backup_is_not_rendered_or_posted_again_after_a_restore(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    tmp_path: Path,
    how: str,
) -> None:
    fake = fake_discord
    settings = easel_settings_for_test
    async with start_easel():
        pass  # the data folder made, its database migrated
    job_id = await journaled_before_start(fake, settings, fake.user_id, "a cat the backup holds")
    backup = backed_up(settings.database_path, tmp_path / "backup" / "easel.sqlite3")
    async with start_easel():
        posted = await fake.wait_for_channel_message(
            lambda m: job_id in m.content and bool(m.attachments), timeout=RENDER_TIMEOUT_S
        )
    assert ledger_kinds(settings.database_path, job_id) == {"reserve", "commit"}
    if how == "easel-restore":
        restore(backup, settings)
    else:
        put_back_by_hand(backup, settings.database_path)
    await started_on_the_restore(fake, start_easel, job_id, posted)
    assert ledger_kinds(settings.database_path, job_id) == {"reserve", "refund"}


async def test_a_backup_taken_during_the_run_put_back_by_hand_posts_nothing_again(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backup holds this run's mark and easel.run stays in place: the job it held queued
    ended (rendered and posted) after it, which the run file counts."""
    fake = fake_discord
    settings = easel_settings_for_test
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        handle = await fake.invoke_command("imagine", {**QUICK, "prompt": "a cat the backup holds"})
        await handle.wait_for_answer()
        (line,) = await bot.services.history.unfinished(fake.user_id, guild_id=fake.guild_id)
        job_id = line.job_id
        backup = backed_up(settings.database_path, tmp_path / "backup" / "easel.sqlite3")
        gate.set()
        posted = await fake.wait_for_channel_message(
            lambda m: job_id in m.content and bool(m.attachments), timeout=RENDER_TIMEOUT_S
        )
    put_back_by_hand(backup, settings.database_path)
    await started_on_the_restore(fake, start_easel, job_id, posted)


async def test_a_start_refuses_pictures_put_back_before_their_database(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, tiny_models_dir: Path
) -> None:
    settings = easel_settings_for_test
    picture = settings.images_dir / "0123456789abcdef" / "0.png"
    picture.parent.mkdir(parents=True)
    picture.write_bytes(b"\x89PNG a picture put back first")
    stopped = bot_process(
        fake_discord, settings.data_dir, tiny_models_dir, log=asyncio.subprocess.PIPE
    )
    async with stopped as process:
        _, err = await asyncio.wait_for(process.communicate(), RENDER_TIMEOUT_S)
    assert process.returncode == 2
    assert err.decode().strip().splitlines()[-1] == (
        f"easel run: error: {settings.data_dir} holds 1 stored picture or upload file(s) in "
        "images/ and inputs/ but no easel.sqlite3: a new database would delete them as no "
        "job's; put easel.sqlite3 back first (`easel restore BACKUP_FILE`), or empty images/ "
        "and inputs/ to start afresh"
    )
    assert picture.is_file()
    assert not settings.database_path.exists()


async def test_a_stale_wal_is_named_by_a_start_and_easel_restore_mends_it(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    fake = fake_discord
    settings = easel_settings_for_test
    async with start_easel():
        made = await imagine(fake, "a cat kept in the backup", seed=3)
    backup = backed_up(settings.database_path, tmp_path / "backup" / "easel.sqlite3")
    left_with_a_stale_wal(settings.database_path, backup)
    starting = bot_process(fake, settings.data_dir, tiny_models_dir, log=asyncio.subprocess.PIPE)
    async with starting as process:
        _, err = await asyncio.wait_for(process.communicate(), RENDER_TIMEOUT_S)
    assert process.returncode == 2
    said = err.decode().strip().splitlines()[-1]
    assert said.startswith(
        f"easel run: error: {settings.database_path} is damaged (database disk image is "
        "malformed): if it was just put back from a backup, the likely cause is an old "
        "easel.sqlite3-wal left beside it"
    )
    assert said.endswith(
        "put the backup back with `easel restore BACKUP_FILE`, which removes "
        "the -wal and -shm first"
    )
    restore(backup, settings)
    async with start_easel():
        shown = await reply_to(fake, "show", {"job_id": job_id_of(made)})
        assert shown.attachments
