"""A job that names no model (queued while the server had no model list and no default) renders
with the engine's pick here, the first model installed: when an admin's model list leaves that
one out while the job waits, it ends before it renders (no GPU time spent on a result to
withhold), refunded, and its maker is told which model and why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.jobs.accounting import Member
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, reply_to
from tests.e2e.test_server_scope import images_today
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine

LEFT_OUT = (
    "was not posted: its model `tiny` is no longer on the server's list of allowed models (an "
    "admin changed the list since it was submitted)"
)


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """Two models, ``tiny`` first by name (the engine's pick for a request naming none)."""
    directory = tmp_path_factory.mktemp("two-models")
    for name in ("tiny", "zoo"):
        (directory / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    return directory


async def test_a_job_naming_no_model_ends_before_rendering_once_the_list_leaves_out_its_pick(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake, engine = fake_discord, HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            running = await fake.invoke_command("imagine", {"prompt": "a harbour", **QUICK})
            await running.wait_for_original(lambda m: not m.is_loading)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            waiting = await fake.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
            await waiting.wait_for_original(lambda m: not m.is_loading)
            [job] = bot.queue.snapshot().queued
            request = await bot.queue.request_of(job.job_id)
            assert request is not None and request.model is None  # the engine picks
            added = await reply_to(
                fake, "easel-admin model", {"action": "add", "name": "zoo"}, user=fake.owner_id
            )
            assert "Added" in added.content
        direct = fake.dm_channel_of(fake.user_id)

        async def told() -> str:
            while True:
                notices = [
                    m.content
                    for m in fake.messages.values()
                    if m.channel_id == direct and job.job_id in m.content
                ]
                if notices:
                    return notices[0]
                await asyncio.sleep(0.02)

        notice = await asyncio.wait_for(told(), RENDER_TIMEOUT_S)
        assert LEFT_OUT in notice and notice.endswith("It does not count against your quota.")
        assert [request.prompt for request in engine.rendered] == ["a harbour"]
        # Nothing counts: the second refunded unrendered; the first, rendered before the list,
        # withheld at delivery by the model its pictures name (the fake engine's), refunded.
        assert await images_today(bot.services, Member(fake.user_id, fake.guild_id)) == 0
