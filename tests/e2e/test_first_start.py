"""What an operator meets on the first starts: mistakes named by their setting, one line saying
what was found, and no command left twice in the server once EASEL_DEV_GUILD_ID is removed."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import app
from bot.app import DEV_GUILD_MARKER, INVITE_PERMISSIONS, EaselBot, build
from bot.discord_endpoints import point_discord_at
from bot.policy.prompt_safety import PromptPlanner
from bot.settings import (
    DISCORD_API_BASE_DEFAULT,
    DISCORD_GATEWAY_URL_DEFAULT,
    Settings,
    SettingsError,
)
from db import jobs as journal
from db.database import load_migrations
from tests.conftest import ErrorLogs
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    deliver_after_token_expiry,
    kept_undelivered,
    reply_to,
)
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_VIEW_AUDIT_LOG


@pytest.fixture(autouse=True)
def discord_endpoints_restored() -> Iterator[None]:
    """``app.run`` points discord.py at the fake for good (a process runs it once)."""
    yield
    point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"discord_token": "not-the-token"}, "DISCORD_TOKEN was refused by Discord"),
        ({"dev_guild_id": 424242}, "EASEL_DEV_GUILD_ID=424242: Discord refused the commands"),
        ({"public_url": "http://x", "web_addr": "busy"}, "EASEL_WEB_ADDR=127.0.0.1:"),
    ],
    ids=["token", "dev-guild", "web-addr"],
)
async def test_start_up_mistakes_name_their_setting(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    busy_port: int,
    change: dict[str, object],
    named: str,
) -> None:
    if change.get("web_addr") == "busy":
        change = {**change, "web_addr": f"127.0.0.1:{busy_port}"}
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    with pytest.raises(SettingsError, match=named):
        await app.run(settings.model_copy(update=change))
    fake_discord.take_violations()  # the wrong token and the unknown server, on purpose


async def test_a_token_reset_while_running_ends_the_run_as_a_refused_token_does(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    running = asyncio.create_task(app.run(settings))
    await fake_discord.wait_until_identified()
    # The operator reset the token: Discord closes the gateway, as for a refused IDENTIFY.
    await fake_discord.drop_gateway_connection(4004, resumable=False)
    with pytest.raises(SettingsError, match="DISCORD_TOKEN was refused by Discord"):
        async with asyncio.timeout(30):
            await running


async def test_a_token_reset_the_gateway_outlives_ends_the_run_at_the_first_refused_post(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """Discord may keep a reset token's gateway open: a result's post refused with a 401
    has Easel check the token itself, and the refused check ends the run as a 4004 does,
    the result kept for the next start (done, its picture kept, not refunded)."""
    error_logs.expect("Discord refused the bot token")
    built: list[EaselBot] = []

    def recorded(settings: Settings) -> EaselBot:
        built.append(build(settings))
        return built[-1]

    monkeypatch.setattr(app, "build", recorded)
    running = asyncio.create_task(app.run(easel_settings_for_test))
    await fake_discord.wait_until_identified(timeout=60)

    async def reset() -> None:  # REST refuses the old token; the gateway stays open
        fake_discord.reset_token("reset-by-the-operator")

    # Its interaction's token expired: its post is a channel message, with the bot's token.
    await deliver_after_token_expiry(fake_discord, built[0], "a lighthouse", meanwhile=reset)
    with pytest.raises(SettingsError, match="DISCORD_TOKEN was refused by Discord"):
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            await running
    fake_discord.take_violations()  # the posts with the old token, refused
    job, pictures, refunded = await kept_undelivered(easel_settings_for_test)
    assert job.status is journal.JobStatus.DONE and pictures == 1 and not refunded


async def test_sigterm_while_starting_stops_cleanly(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop asked for while setup_hook runs cancels it: nothing it does next finds the
    database closed under it."""
    warming = asyncio.Event()

    async def slow_warm_up(
        self: PromptPlanner, operator_words: frozenset[str] = frozenset()
    ) -> None:
        warming.set()
        await asyncio.sleep(1)

    monkeypatch.setattr(PromptPlanner, "warm_up", slow_warm_up)
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    running = asyncio.create_task(app.run(settings))
    await warming.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(30):
        await running  # raised "Cannot operate on a closed database" before


async def test_first_start_says_what_it_found_and_a_dev_server_is_cleared_later(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    settings = easel_settings(fake, tmp_path / "data", tiny_models_dir)
    text_only = await fake.post_user_message("look at this", user=fake.owner_id)
    caplog.set_level(logging.INFO, logger="bot.app")
    async with running_bot(fake, build(settings)):
        shown = await reply_to(fake, "easel-admin show", user=fake.owner_id)
        assert "kicks and timeouts: not seen (grant Easel the View Audit Log" in shown.content
        fake.grant_permissions(fake.bot_user_id, PERMISSION_VIEW_AUDIT_LOG)
        shown = await reply_to(fake, "easel-admin show", user=fake.owner_id)
        assert "kicks and timeouts" not in shown.content
        # Discord would blank a member's picture for Easel: the refusal says why.
        refused = await reply_to(fake, "vary", {"message": text_only.jump_url})
        assert "Message Content intent" in refused.content
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("started:")]
    assert len(started) == 1
    assert "renders on cpu; 1 model(s) in" in started[0]
    # Absolute: a relative EASEL_DATA_DIR started from another folder is another database.
    data_in = f"; data in {settings.data_dir.resolve()} (schema {len(load_migrations())});"
    assert data_in in started[0]
    assert f"commands registered to server {fake.guild_id} only" in started[0]
    assert f"client_id={fake.application_id}&" in started[0]
    assert started[0].endswith(f"&permissions={INVITE_PERMISSIONS.value}")
    assert fake.registered_commands(guild=True)
    assert (settings.data_dir / DEV_GUILD_MARKER).read_text().strip() == str(fake.guild_id)

    caplog.clear()
    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    (empty_models / "old.ckpt").write_bytes(b"not offered: pickles are not allowed")
    production = settings.model_copy(
        update={
            "dev_guild_id": None,
            "models_dir": empty_models,
            "devices": ("cuda:99",),
            "warm_start": "off",
            "captioner_dir": tmp_path / "no-captioner",
        }
    )
    async with running_bot(fake, build(production)):
        pass
    assert fake.registered_commands(guild=True) == []
    assert fake.registered_commands()
    assert not (settings.data_dir / DEV_GUILD_MARKER).exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("no model in ") for w in warnings), warnings
    assert any("cuda:99" in w and "EASEL_DEVICES" in w for w in warnings), warnings
    # A checkpoint left out, and a /describe that would fail, are named once at the start.
    pickles = [w for w in warnings if "old.ckpt" in w]
    assert pickles == [
        "checkpoints left out, pickle files: old.ckpt; convert them to .safetensors or set "
        "EASEL_ALLOW_PICKLE=1"
    ]
    no_captioner = f"EASEL_CAPTIONER_DIR={tmp_path / 'no-captioner'} does not exist"
    assert [w for w in warnings if no_captioner in w] == [
        f"/describe fails: {no_captioner}: it needs a BLIP captioning model folder with config.json"
    ]

    caplog.clear()
    misnamed = settings.model_copy(update={"default_model": "nope", "warm_start": "off"})
    async with running_bot(fake, build(misnamed)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("EASEL_DEFAULT_MODEL='nope' is not among") for w in warnings), warnings
