"""Shared steps for Easel's end-to-end tests."""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image

from bot.app import EaselBot, build
from bot.jobs.accounting import Member
from bot.jobs.queue import FinishedJob, JobQueue, Privately, Submission
from bot.metrics import METRICS_REGISTRY as REGISTRY
from bot.policy.quota import Period
from bot.services import Services
from bot.settings import Settings
from bot.user_errors import Reason
from cogs.history import ERASE_EVERYTHING
from db import jobs as journal
from db import quotas as ledger
from db import refusals
from db.database import connect
from inference.types import RenderRequest
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.rules import walk_components
from tests.support.pictures import has_picture

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
RENDER_TIMEOUT_S = 90
QUICK = {"steps": 2, "size": "64x64"}
REPO_ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def bot_process(
    fake: FakeDiscord,
    data_dir: Path,
    models_dir: Path,
    *args: str,
    log: IO[str] | int | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m bot`` (or ``python ARGS``: another main) as a real process against
    ``fake``, rendering on the CPU; killed at the end if still running. With ``log`` (a file,
    or ``asyncio.subprocess.STDOUT``) its stderr (the log) goes there and its stdout is a pipe."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "EASEL_DEV_GUILD_ID": str(fake.guild_id),
        "EASEL_DATA_DIR": str(data_dir),
        "EASEL_MODELS_DIR": str(models_dir),
        "EASEL_DEVICES": "cpu",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *(args or ("-m", "bot")),
        env=env,
        cwd=data_dir.parent,
        stdout=None if log is None else asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def restarted_here(
    fake: FakeDiscord, data_dir: Path, models_dir: Path
) -> AsyncIterator[EaselBot]:
    """Easel started again in the test's own process (the real engine, on the CPU) on the data
    a ``bot_process`` left: what a restart delivers does not depend on how it is started, and
    a second interpreter would cost seconds of imports and model loading."""
    bot = build(easel_settings(fake, data_dir, models_dir))
    async with running_bot(fake, bot):
        yield bot


async def kept_refusals(bot: EaselBot, guild_id: int) -> list[tuple[str, str]]:
    """The refusals the server's dashboard lists, oldest first: reason and sentence."""
    conn = await connect(bot.settings.database_path)
    try:
        kept = await refusals.latest(conn, guild_id, 50)
    finally:
        await conn.close()
    return [(refused.reason, refused.sentence or "") for refused in reversed(kept)]


def refusals_counted(reason: Reason) -> float:
    """``easel_refusals_total`` under ``reason`` so far, in this process."""
    return REGISTRY.get_sample_value("easel_refusals_total", {"reason": reason.value}) or 0.0


def with_web_server(settings: Settings) -> Settings:
    """The settings with Easel's web server (mask editor, dashboard) on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return settings.model_copy(
        update={"public_url": f"http://127.0.0.1:{port}", "web_addr": f"127.0.0.1:{port}"}
    )


def link_of(message: StoredMessage) -> str:
    """The URL of the message's one link button."""
    [url] = [c["url"] for c in walk_components(message.components) if c.get("url")]
    return str(url)


def size_of(message: StoredMessage) -> tuple[int, int]:
    """The size of the message's first picture."""
    with Image.open(io.BytesIO(message.attachments[0].data)) as image:
        return image.size


def modal_fields(modal: dict[str, object]) -> dict[str, tuple[str, str]]:
    """The modal's text inputs: label -> (custom_id, filled-in value)."""
    components = modal["components"]
    assert isinstance(components, list)
    return {
        c["label"]: (c["custom_id"], c.get("value") or "")
        for c in walk_components(components)
        if c.get("type") == 4  # text input
    }


async def images_today(services: Services, user: int, guild: int) -> int:
    """The pictures charged to ``user`` in ``guild`` today."""
    report = await services.quota_status.report(Member(user, guild))
    return next(p.images for p in report.periods if p.period is Period.DAY)


def job_id_of(message: StoredMessage) -> str:
    match = re.search(r"job `([0-9a-f]{16})`", message.content)
    assert match is not None, message.content
    return match.group(1)


async def imagine(
    fake: FakeDiscord, prompt: str, user: int | None = None, **options: Any
) -> StoredMessage:
    """Run /imagine and wait for its result message."""
    handle = await fake.invoke_command("imagine", {"prompt": prompt, **QUICK, **options}, user=user)
    return await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def reply_to(
    fake: FakeDiscord, command: str, options: Mapping[str, Any] | None = None, **kwargs: Any
) -> StoredMessage:
    handle = await fake.invoke_command(command, options, **kwargs)
    return await handle.wait_for_answer()


async def forget_me(
    fake: FakeDiscord, *, user: int | None = None, channel: int | None = None
) -> InteractionHandle:
    """/forget-me as a member runs it: asked, then its confirmation's button pressed; the
    press's handle, whose answer says what was erased."""
    asked = await fake.invoke_command("forget-me", user=user, channel=channel)
    question = await asked.wait_for_answer()
    assert question.is_ephemeral and "This cannot be undone" in question.content
    return await fake.click(question, label=ERASE_EVERYTHING, user=user)


async def limit_daily_images(fake: FakeDiscord, images: int, member: int | None = None) -> None:
    """The server's owner caps a member's pictures a day (default: the test's member)."""
    limits = {
        "scope": "user",
        "member": fake.user_id if member is None else member,
        "images_per_day": images,
    }
    await reply_to(fake, "easel-admin quota", limits, user=fake.owner_id)


def calls_held(owner: object, method: str, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Each call of ``owner``'s coroutine method ``method`` (the bot's deliveries, its start
    gate) waits until the event returned is set."""
    released = asyncio.Event()
    call = getattr(owner, method)

    async def held(*args: Any, **kwargs: Any) -> Any:
        await released.wait()
        return await call(*args, **kwargs)

    monkeypatch.setattr(owner, method, held)
    return released


def past_the_tokens(fake: FakeDiscord, bot: EaselBot, seconds: float) -> None:
    """``seconds`` pass for Discord, whose tokens expire, and for the bot alike."""
    fake.advance_time(seconds)
    bot_clocks_on(bot, seconds)


def bot_clocks_on(bot: EaselBot, seconds: float) -> None:
    """The bot's clocks that judge its tokens ``seconds`` on: its wall clock (a restored
    job's), and the monotonic one (this run's, from their receipt)."""
    bot.results.wall_clock = lambda: time.time() + seconds
    bot.results.monotonic = lambda: time.monotonic() + seconds


async def deliver_after_token_expiry(
    fake: FakeDiscord,
    bot: EaselBot,
    prompt: str = "a slow cat",
    channel: int | None = None,
    *,
    meanwhile: Callable[[], Awaitable[object]] | None = None,
) -> asyncio.Future[int | Privately | None]:
    """Run a quick /imagine (in ``channel``, default the fake's) whose result is held back
    until its token has expired (and ``meanwhile`` ran); the future holds where the sink
    posted it (``ResultSink.deliver``: its message's id in the channel, ``PRIVATELY``, or
    None: posted nowhere)."""
    gate = asyncio.Event()
    original_deliver = bot.results.deliver
    posted: asyncio.Future[int | Privately | None] = asyncio.get_running_loop().create_future()

    async def late_deliver(job: FinishedJob) -> int | Privately | None:
        await gate.wait()
        message_id = await original_deliver(job)
        posted.set_result(message_id)
        return message_id

    bot.queue.set_sink(type("Late", (), {"deliver": staticmethod(late_deliver)})())
    handle = await fake.invoke_command("imagine", {"prompt": prompt, **QUICK}, channel=channel)
    await handle.wait_for_ack()
    past_the_tokens(fake, bot, 16 * 60)
    if meanwhile is not None:
        await meanwhile()
    gate.set()
    return posted


async def kept_undelivered(settings: Settings) -> tuple[journal.JobRecord, int, bool]:
    """The journal's one finished job left undelivered (a stopped Easel's), how many pictures
    it kept, and whether it was refunded."""
    conn = await connect(settings.database_path)
    try:
        (job,) = await journal.finished_undelivered(conn)
        return job, len(await journal.images_of(conn, job.id)), await ledger.refunded(conn, job.id)
    finally:
        await conn.close()


async def journaled_before_start(
    fake: FakeDiscord,
    settings: Settings,
    user_id: int,
    prompt: str,
    where: tuple[int, int] | None = None,
) -> str:
    """A quick /imagine of ``user_id`` in the fake's channel (``where``: in this server and
    channel), journaled queued by the previous process (stopped before it rendered); its id."""
    guild_id, channel_id = (fake.guild_id, fake.channel_id) if where is None else where
    conn = await connect(settings.database_path)
    try:
        return await JobQueue(conn, [], settings.images_dir).submit(
            Submission(
                "imagine",
                RenderRequest(prompt, steps=2, width=64, height=64),
                user_id,
                guild_id,
                channel_id=channel_id,
            )
        )
    finally:
        await conn.close()
