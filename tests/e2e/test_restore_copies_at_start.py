"""A start holding the data folder's lock deletes the staged copy of a backup that an
``easel restore`` cut short left, and keeps and warns of the copies only the operator may
delete (the database a restore replaced; the database a swap back cut short was putting back,
maybe its only copy): each holds members' data out of /forget-me's and retention's reach.
``app.run`` over the fake Discord."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot import app
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine

START_LIMIT_S = 60  # the start, on a busy CI machine

pytestmark = pytest.mark.usefixtures("discord_endpoints_restored")


async def started_and_stopped(fake: FakeDiscord, data_dir: Path, models: Path) -> None:
    """``easel run`` started, then stopped as a supervisor does."""
    running = asyncio.create_task(app.run(easel_settings(fake, data_dir, models)))
    await fake.wait_until_identified(timeout=START_LIMIT_S)
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await running == 0


async def test_a_start_deletes_a_cut_short_restores_staged_copy_and_warns_of_those_it_keeps(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = InstantEngine()
    monkeypatch.setattr(app, "engine_factory_for", lambda _settings: lambda _device: engine)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    replaced, staged = data_dir / "easel.sqlite3.replaced", data_dir / "easel.sqlite3.restoring"
    putting_back = data_dir / "easel.sqlite3.putting-back"
    for copy in (replaced, putting_back, staged, data_dir / "easel.sqlite3.restoring-journal"):
        copy.write_bytes(b"a member's data")

    await started_and_stopped(fake_discord, data_dir, tiny_models_dir)
    assert sorted(p.name for p in data_dir.iterdir() if "sqlite3." in p.name) == [
        "easel.sqlite3.putting-back",  # maybe the only copy of what a swap back put back
        "easel.sqlite3.replaced",
    ]
    said = [r.getMessage() for r in caplog.records if r.name == "bot.restores"]
    assert said[0] == f"deleted {staged}, a copy of a backup left by an `easel restore` cut short"
    assert [line.split(" (")[0] for line in said[1:]] == [str(replaced), str(putting_back)]
    assert all(
        "holds members' data that /forget-me and retention do not reach" in line
        for line in said[1:]
    )
