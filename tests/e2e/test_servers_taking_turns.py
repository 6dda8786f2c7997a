"""EASEL_FAIRNESS=servers over the fake Discord: two servers sharing one held device take turns
on it, whatever their number of members waiting (``bot.jobs.scheduler``, "Servers take
turns")."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bot.settings import Settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture

A_MEMBERS = (7101, 7102, 7103)
B_MEMBERS = (7201, 7202)
WAIT_S = 30.0


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: commands synced to one server would exist there only.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None, "fairness": "servers"})


async def test_two_servers_take_turns_on_the_device(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """While server A's render holds the device, A's three members ask for a picture each, then
    server B's two: the device renders B's and A's in turn (with members' fairness, A's
    three first, asked first)."""
    fake = fake_discord
    server_b = fake.add_guild("Server B")
    for user in A_MEMBERS:
        fake.add_member(user, f"a-{user}", roles=(fake.member_role_id,))
    for user in B_MEMBERS:
        fake.add_member(
            user, f"b-{user}", roles=(server_b.member_role_id,), guild=server_b.guild_id
        )
    # Each job its own guidance scale, so that no two share a batch, and one cost.
    scales = itertools.count(1)

    async def queued(prompt: str, user: int, channel: int | None = None) -> InteractionHandle:
        options = {"prompt": prompt, "steps": 2, "size": "64x64", "cfg": float(next(scales))}
        handle = await fake.invoke_command("imagine", options, user=user, channel=channel)
        await handle.wait_for_original(lambda message: not message.is_loading, timeout=WAIT_S)
        return handle

    engine = HeldEngine()
    async with start_easel(lambda device: engine):
        with engine:
            handles = [await queued("a blocker", fake.user_id)]
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            for user in A_MEMBERS:
                handles.append(await queued(f"a {user}", user))
            for user in B_MEMBERS:
                handles.append(await queued(f"b {user}", user, server_b.channel_id))
        for handle in handles:
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    rendered = [request.prompt for request in engine.rendered]
    assert rendered == ["a blocker", "b 7201", "a 7101", "b 7202", "a 7102", "a 7103"]
