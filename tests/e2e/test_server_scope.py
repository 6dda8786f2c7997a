"""Admin power, jobs and quotas stay in their server; direct messages only when the operator
turns them on, and then with the DM quota. Two servers and DMs on the fake Discord."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from bot.app import EaselBot, build
from bot.jobs.accounting import Member
from bot.policy.quota import Period
from bot.services import Services
from bot.settings import Settings
from db.jobs import JobStatus
from tests.conftest import ErrorLogs
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import CommandNotShown, FakeDiscord
from tests.fake_discord.fixtures import running_bot

GUILD_CONTEXT, BOT_DM_CONTEXT = 0, 1
MADE_UP_JOB = "0123456789abcdef"


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> Settings:
    # Registered globally: commands synced to one server would exist there only.
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir)
    return settings.model_copy(update={"dev_guild_id": None})


async def images_today(services: Services, member: Member) -> int:
    report = await services.quota_status.report(member)
    return next(p.images for p in report.periods if p.period is Period.DAY)


def contexts_of(fake: FakeDiscord, name: str) -> list[int]:
    [command] = [c for c in fake.registered_commands() if c["name"] == name]
    return sorted(command["contexts"] or [])


async def test_admin_power_and_jobs_stay_in_their_server(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    other = fake.add_guild("Other server")  # its owner manages it, and is a plain member here
    fake.add_member(other.owner_id, "other-admin", roles=(fake.member_role_id,))
    fake.add_member(fake.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id)
    fake.add_member(fake.owner_id, "owner", roles=(other.member_role_id,), guild=other.guild_id)
    async with start_easel() as bot:
        long_job = await fake.invoke_command(
            "imagine", {"prompt": "a secret cat", "steps": 150, "size": "512x512"}
        )
        rendering = await long_job.wait_for_original(lambda m: "Rendering" in m.content, 30)
        [cancel_id] = [c for c in rendering.custom_ids if c.startswith("easel:cancel:")]
        job_id = cancel_id.removeprefix("easel:cancel:")

        # The other server's admin, with the id from the button: as unknown as a made-up id.
        elsewhere = await reply_to(
            fake, "cancel", {"job_id": job_id}, user=other.owner_id, channel=other.channel_id
        )
        made_up = await reply_to(
            fake, "cancel", {"job_id": MADE_UP_JOB}, user=other.owner_id, channel=other.channel_id
        )
        assert elsewhere.content == made_up.content.replace(MADE_UP_JOB, job_id)
        assert "There is no job" in elsewhere.content
        # Here that admin is a plain member: the button refuses them.
        click = await fake.click(rendering, cancel_id, user=other.owner_id)
        reply = await click.wait_for_original(lambda m: "Only the member" in m.content)
        assert reply.is_ephemeral
        state = await bot.queue.state(job_id)
        assert state is not None and state.status is JobStatus.RUNNING

        # The owner's own job is no business of the other server either.
        listed = await reply_to(fake, "queue", channel=other.channel_id)
        assert "a secret cat" not in listed.content and job_id not in listed.content
        assert "no queued or running jobs here" in listed.content
        latest = await reply_to(fake, "cancel", channel=other.channel_id)
        assert "no queued or running job here" in latest.content

        stopped = await reply_to(fake, "cancel", {"job_id": job_id})
        assert "stops at the next step" in stopped.content
        await long_job.wait_for_original(lambda m: "Cancelled" in m.content, timeout=30)

        # This server's admin is charged like anyone in the other server, where they are not.
        handle = await fake.invoke_command(
            "imagine", {"prompt": "a cat", **QUICK}, user=fake.owner_id, channel=other.channel_id
        )
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert await images_today(bot.services, Member(fake.owner_id, other.guild_id)) == 1
        there = await reply_to(fake, "quota", user=fake.owner_id, channel=other.channel_id)
        assert "no limits apply" not in there.content and "1 of 100 images" in there.content
        here = await reply_to(fake, "quota", user=fake.owner_id)
        assert "no limits apply to you" in here.content


async def test_direct_messages_are_off_by_default(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    dm = fake.dm_channel_of(fake.user_id)
    async with start_easel() as bot:
        assert contexts_of(fake, "imagine") == [GUILD_CONTEXT]
        assert contexts_of(fake, "easel-admin") == [GUILD_CONTEXT]
        with pytest.raises(CommandNotShown):
            await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=dm)

        # A registration from when DMs were on is still what Discord's client shows.
        for command in fake.registered_commands():
            command["contexts"] = [GUILD_CONTEXT, BOT_DM_CONTEXT]
        for name, options in [("imagine", {"prompt": "a cat", **QUICK}), ("quota", {})]:
            refused = await reply_to(fake, name, options, channel=dm)
            assert refused.is_ephemeral and "works only in a server" in refused.content
        assert bot.queue.queued_count() == 0
        assert await bot.services.history.unfinished(fake.user_id, guild_id=None) == []
        assert await images_today(bot.services, Member(fake.user_id, None)) == 0


async def test_direct_messages_when_the_operator_allows_them(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, error_logs: ErrorLogs
) -> None:
    fake = fake_discord
    settings = easel_settings_for_test.model_copy(
        update={"allow_dms": True, "dm_images_per_day": 1}
    )
    dm = fake.dm_channel_of(fake.owner_id)  # the owner manages the server, not their DMs
    async with running_bot(fake, build(settings)) as client:
        bot = cast(EaselBot, client)
        assert contexts_of(fake, "imagine") == [GUILD_CONTEXT, BOT_DM_CONTEXT]
        assert contexts_of(fake, "easel-admin") == [GUILD_CONTEXT]
        with pytest.raises(CommandNotShown):
            await fake.invoke_command("easel-admin show", channel=dm, user=fake.owner_id)

        first = await fake.invoke_command(
            "imagine", {"prompt": "a cat", **QUICK}, channel=dm, user=fake.owner_id
        )
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        second = await reply_to(
            fake, "imagine", {"prompt": "a dog", **QUICK}, channel=dm, user=fake.owner_id
        )
        assert second.is_ephemeral and "You have used 1 of 1 images today" in second.content
        quota = await reply_to(fake, "quota", channel=dm, user=fake.owner_id)
        assert "1 of 1 images" in quota.content
        assert await images_today(bot.services, Member(fake.owner_id, None)) == 1
        # Spent in DMs, not in the server.
        assert await images_today(bot.services, Member(fake.owner_id, fake.guild_id)) == 0
