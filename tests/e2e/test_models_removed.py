"""Models removed from the folder while the bot runs: a plain /imagine falls through a server
default or first allowed model no longer installed to one that is, and a job queued for a model
removed while it waited is refunded, its member told to ask an admin and the operator's log
told once."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.app import build
from inference.engine import Engine
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today, reply_to
from tests.e2e.test_imagine import parameters_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.support.pictures import has_picture


def library(tmp_path: Path, tiny_models_dir: Path, *names: str) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for name in names:
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    return models


# An admin's commands making ``alpha`` what a plain /imagine renders with.
FIRST_ALLOWED = [("easel-admin model", {"action": "add", "name": n}) for n in ("alpha", "tiny")]
SERVER_DEFAULT = [("easel-admin default-model", {"name": "alpha"})]


@pytest.mark.parametrize("chosen_by", [FIRST_ALLOWED, SERVER_DEFAULT], ids=["listed", "default"])
async def test_a_plain_imagine_passes_over_a_default_removed(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    chosen_by: list[tuple[str, dict[str, str]]],
) -> None:
    fake = fake_discord
    models = library(tmp_path, tiny_models_dir, "alpha", "tiny")
    settings = easel_settings(fake, tmp_path / "data", models, tmp_path / "wildcards")
    async with running_bot(fake, build(settings)):
        for command, options in chosen_by:
            await reply_to(fake, command, options, user=fake.owner_id)
        (models / "alpha").unlink()
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        post = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert parameters_of(post)[1]["Model"] == "tiny"


async def test_a_job_whose_model_goes_while_it_waits_tells_the_member_to_ask_an_admin(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    models = library(tmp_path, tiny_models_dir, "alpha", "tiny")
    settings = easel_settings(fake, tmp_path / "data", models, tmp_path / "wildcards")
    # The first job holds the device until the model of the one behind it is removed.
    holding, release = threading.Event(), threading.Event()

    def held(render: Any) -> Any:
        def hold_first(engine: Engine, requests: Any, *args: Any, **kwargs: Any) -> Any:
            prompts = [r.prompt for r in (requests if isinstance(requests, list) else [requests])]
            if "hold the device" in prompts:
                holding.set()
                release.wait(RENDER_TIMEOUT_S)
            return render(engine, requests, *args, **kwargs)

        return hold_first

    monkeypatch.setattr(Engine, "render", held(Engine.render))
    monkeypatch.setattr(Engine, "render_batch", held(Engine.render_batch))
    async with running_bot(fake, build(settings)) as bot:
        first = await fake.invoke_command(
            "imagine", {"prompt": "hold the device", "model": "tiny", **QUICK}
        )
        await first.wait_for_answer()
        assert await _within(holding)
        waiting = await fake.invoke_command(
            "imagine", {"prompt": "a bird", "model": "alpha", **QUICK}
        )
        assert "Queued" in (await waiting.wait_for_answer()).content
        (models / "alpha").unlink()
        with caplog.at_level(logging.WARNING, logger="inference.not_installed"):
            release.set()
            final = await waiting.wait_for_original(
                lambda message: "❌" in message.content, timeout=RENDER_TIMEOUT_S
            )
            await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "model 'alpha' is not installed on this server: ask an admin" in final.content
        assert "on this device" not in final.content
        told = [r.getMessage() for r in caplog.records if r.name == "inference.not_installed"]
        # The name asked is not in the log: the same lookup refuses names members typed.
        assert told == [f"model is not installed: not in {models}; installed: tiny"]
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # refunded


async def _within(event: threading.Event) -> bool:
    return await asyncio.to_thread(event.wait, RENDER_TIMEOUT_S)
