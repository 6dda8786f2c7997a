"""A data folder moved, or restored elsewhere (a new host, the Docker image's /data), between
two starts: the pictures stored before the move are still Easel's. /show posts them, a button
makes a new picture of them, and /forget-me deletes them (and says so only then). The real
bot over the fake Discord, a tiny real render."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from bot.app import build
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, imagine, job_id_of
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
        forget = await fake.invoke_command("forget-me")
        forgotten = await forget.wait_for_original(lambda m: not m.is_loading, timeout=60)
        assert "erased 2 jobs, 2 stored pictures" in forgotten.content
    assert not list((new / "images").rglob("*.png"))
