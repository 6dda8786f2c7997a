"""A data folder moved, or restored elsewhere (a new host, the Docker image's /data), between
two starts: the pictures stored before the move are still Easel's. /show posts them, a button
makes a new picture of them, and /forget-me deletes them (and says so only then). The real
bot over the fake Discord, a tiny real render."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from pathlib import Path

from bot.app import build
from tests.conftest import ErrorLogs
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, forget_me, imagine, job_id_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.support.pictures import has_picture


async def test_a_moved_data_folder_keeps_its_pictures_shown_and_erasable(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    fake = fake_discord
    old = tmp_path / "old" / "data"
    async with running_bot(fake, build(easel_settings(fake, old, tiny_models_dir, tmp_path / "w"))):
        result = await imagine(fake, "a cat", seed=3)
    job_id = job_id_of(result)
    with sqlite3.connect(old / "easel.sqlite3") as raw:
        stored = raw.execute("SELECT path FROM images WHERE job_id = ?", (job_id,)).fetchall()
    assert stored == [(f"images/{job_id}/0.png",)]  # by its place in the folder, not the disk

    new = tmp_path / "new" / "data"
    new.parent.mkdir()
    shutil.move(old, new)
    async with running_bot(fake, build(easel_settings(fake, new, tiny_models_dir, tmp_path / "w"))):
        shown = await (await fake.invoke_command("show", {"job_id": job_id})).wait_for_original(
            has_picture
        )
        assert "went wrong" not in shown.content
        upscaled = await (await fake.click(result, label="Upscale (2x)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert "deleted" not in upscaled.content
        forget = await forget_me(fake)
        forgotten = await forget.wait_for_original(lambda m: not m.is_loading, timeout=60)
        assert "erased 2 jobs, 2 stored pictures" in forgotten.content
    assert not list((new / "images").rglob("*.png"))


async def tampered(data: Path, sql: str, parameters: tuple[str, ...]) -> None:
    """``sql`` written into the running bot's database as another process would: off the
    event loop (the bot's own transaction may need the loop to finish) with a wait that only
    bounds a hang."""

    def write() -> None:
        raw = sqlite3.connect(data / "easel.sqlite3", timeout=60)
        with contextlib.closing(raw), raw:  # committed, then closed
            raw.execute(sql, parameters)

    await asyncio.to_thread(write)


async def test_a_stored_name_outside_the_data_folder_reads_as_a_missing_picture(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    """A tampered database naming a picture with ``..`` parts, or by an absolute path, outside
    the data folder: /show and a button read neither, and answer as for a deleted picture."""
    fake = fake_discord
    data = tmp_path / "data"
    secret = tmp_path / "secret.png"
    async with running_bot(
        fake, build(easel_settings(fake, data, tiny_models_dir, tmp_path / "w"))
    ):
        result = await imagine(fake, "a cat", seed=3)
        job_id = job_id_of(result)
        shutil.copyfile(data / "images" / job_id / "0.png", secret)  # a picture, not Easel's
        for outside in (f"images/{job_id}/../../../secret.png", str(secret)):
            await tampered(data, "UPDATE images SET path = ? WHERE job_id = ?", (outside, job_id))
            shown = await (
                await fake.invoke_command("show", {"job_id": job_id})
            ).wait_for_followup()
            assert "was deleted" in shown.content
            assert not shown.attachments
            clicked = await (await fake.click(result, label="Upscale (2x)")).wait_for_answer()
            assert "was deleted" in clicked.content
            assert not clicked.attachments


async def test_show_picture_and_dm_me_answer_a_missing_picture_as_deleted(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path, error_logs: ErrorLogs
) -> None:
    """U1-U4 and DM me on a picture named outside the data folder, or deleted from the disk:
    "Picture N of job … was deleted", nothing posted or sent, and no internal error (the
    ``error_logs`` fixture fails on one)."""
    fake = fake_discord
    data = tmp_path / "data"
    secret = tmp_path / "secret.png"
    async with running_bot(
        fake, build(easel_settings(fake, data, tiny_models_dir, tmp_path / "w"))
    ):
        result = await imagine(fake, "two boats", count=2, seed=3)
        job_id = job_id_of(result)
        shutil.copyfile(data / "images" / job_id / "0.png", secret)  # a picture, not Easel's
        await tampered(
            data, "UPDATE images SET path = ? WHERE job_id = ? AND idx = 0", (str(secret), job_id)
        )
        (data / "images" / job_id / "1.png").unlink()
        for label, told in (("U1", 1), ("U2", 2), ("DM me", 1)):
            answer = await (await fake.click(result, label=label)).wait_for_answer()
            assert answer.content == (
                f"Picture {told} of job `{job_id}` was deleted; make a new one with /imagine."
            ), label
            assert not answer.attachments
        direct = fake.dm_channel_of(fake.user_id)
        assert not [m for m in fake.messages.values() if m.channel_id == direct]
