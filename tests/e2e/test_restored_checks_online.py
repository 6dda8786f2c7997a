"""Members banned, kicked or timed out while Easel was offline are asked about once it is
online, in the background: Easel answers commands meanwhile, and a member's restored job waits
for Discord's answer about that member only. Over the fake Discord."""

from __future__ import annotations

import pytest

from bot.settings import Settings
from cogs.bans import BansCog
from db import jobs as journal
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    has_picture,
    journaled_before_start,
    reply_to,
)
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine

RESTORED = 6401  # has a job journaled by the previous process


async def test_easel_answers_commands_while_discord_is_slow_to_answer_about_restored_work(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, settings = fake_discord, easel_settings_for_test
    fake.add_member(RESTORED, "restored", roles=(fake.member_role_id,))
    # The previous process journaled the member's job and stopped before it rendered.
    restored = await journaled_before_start(fake, settings, RESTORED, "a restored barn")
    # Discord does not answer about the member until told to.
    answer = calls_held(BansCog, "standing", monkeypatch)
    engine = InstantEngine()
    async with start_easel(lambda device: engine) as bot:  # online: no 60 s hold first
        shown = await fake.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # Another member's job rendered and posted; the restored one waits for its answer.
        assert [request.prompt for request in engine.rendered] == ["a lighthouse"]
        state = await bot.queue.state(restored)
        assert state is not None and state.status is journal.JobStatus.QUEUED
        # Its member reads it as waiting for the check, not as rendering.
        listed = await reply_to(fake, "queue", user=RESTORED)
        assert f"`{restored}` waiting for Easel's start-up check —" in listed.content
        answer.set()  # the member is in the server, in no timeout: their job goes on
        await fake.wait_for_channel_message(
            lambda message: restored in message.content and not message.is_ephemeral,
            timeout=RENDER_TIMEOUT_S,
        )
    assert [request.prompt for request in engine.rendered] == ["a lighthouse", "a restored barn"]
