"""Admin power, jobs and quotas stay in their server; direct messages only when the operator
turns them on, and then with the DM quota. Two servers and DMs on the fake Discord."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from bot.app import EaselBot, build
from bot.bans import StopCause
from bot.jobs.accounting import Member
from bot.policy.delivery import SANCTION_STOPPED
from bot.policy.quota import Period
from bot.services import Services
from bot.settings import Settings
from db.jobs import JobStatus
from tests.conftest import ErrorLogs
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import CommandNotShown, FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import HeldEngine

GUILD_CONTEXT, BOT_DM_CONTEXT = 0, 1
MADE_UP_JOB = "0123456789abcdef"
RAIDER = 6301


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
        assert "stops at the next step: you pay only for the GPU time" in stopped.content
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


async def acknowledged(fake: FakeDiscord, prompt: str, channel: int) -> InteractionHandle:
    handle = await fake.invoke_command(
        "imagine", {"prompt": prompt, **QUICK}, user=RAIDER, channel=channel
    )
    await handle.wait_for_original(lambda m: not m.is_loading)
    return handle


def stop_while_handled(bot: EaselBot, guild_id: int, user_id: int) -> None:
    """The member's next submission is stopped in ``guild_id`` while it is handled (heard
    once its quota is asked, after its member was checked): work begun before the stop."""
    asked_quota = bot.queue.quota_refusal

    async def stopped_meanwhile(*args: Any, **kwargs: Any) -> str | None:
        bot.services.stopped_members.add(guild_id, user_id)
        return await asked_quota(*args, **kwargs)

    bot.queue.quota_refusal = stopped_meanwhile  # type: ignore[method-assign]


async def test_a_command_received_before_a_ban_is_held_though_the_hosts_clock_lags(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's clock 10 s behind Discord's: a command received before the ban, whose
    interaction time reads as after the ban on Easel's clock, is still held: its receipt is
    compared with the ban's, both on the monotonic clock (review AUD3)."""
    fake = fake_discord
    async with start_easel() as bot:
        monkeypatch.setattr(bot.services.stopped_members, "_clock", lambda: time.time() - 10.0)
        stop_while_handled(bot, fake.guild_id, fake.user_id)
        late = await fake.invoke_command("imagine", {"prompt": "a late cat", **QUICK})
        await late.wait_for_original_deleted()
        assert await bot.services.history.unfinished(fake.user_id, guild_id=fake.guild_id) == []


async def test_a_click_received_before_a_ban_is_held_though_the_hosts_clock_lags(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a command: a button's click received before the ban is held with the host's clock
    10 s behind Discord's, its receipt stamped as its event came (review R_FAUD3: a click was
    still placed by Discord's time against the host's clock)."""
    fake = fake_discord
    async with start_easel() as bot:
        made = await fake.invoke_command("imagine", {"prompt": "a calm cat", **QUICK})
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        monkeypatch.setattr(bot.services.stopped_members, "_clock", lambda: time.time() - 10.0)
        stop_while_handled(bot, fake.guild_id, fake.user_id)
        reroll = next(c for c in result.custom_ids if c.startswith("easel:reroll:"))
        click = await fake.click(result, reroll)
        await click.wait_for_original_deleted()
        assert await bot.services.history.unfinished(fake.user_id, guild_id=fake.guild_id) == []


async def test_a_ban_cancels_the_members_unfinished_jobs_in_that_server_only(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """A raider's queued jobs would go on posting for minutes after their ban: it cancels
    their jobs there, the running one and the queued one (nothing charged), audited for the
    server's admins; their jobs in another server and in DMs render."""
    fake = fake_discord
    other = fake.add_guild("Other server")
    fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))
    fake.add_member(RAIDER, "raider", roles=(other.member_role_id,), guild=other.guild_id)
    engine = HeldEngine()
    settings = easel_settings_for_test.model_copy(update={"allow_dms": True})
    async with running_bot(fake, build(settings, lambda device: engine)) as client:
        bot = cast(EaselBot, client)
        with engine:
            running = await acknowledged(fake, "a raid", fake.channel_id)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            queued = await acknowledged(fake, "another raid", fake.channel_id)
            elsewhere = await acknowledged(fake, "a harbour", other.channel_id)
            in_dm = await acknowledged(fake, "a lighthouse", fake.dm_channel_of(RAIDER))
            unfinished = await bot.services.history.unfinished(RAIDER, guild_id=fake.guild_id)
            here = [line.job_id for line in unfinished]
            assert len(here) == 2

            await fake.ban_member(RAIDER)
            for handle in (running, queued):
                await handle.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
        for handle in (elsewhere, in_dm):
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert await images_today(bot.services, Member(RAIDER, fake.guild_id)) == 0
        assert await images_today(bot.services, Member(RAIDER, other.guild_id)) == 1
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        [entry] = [line for line in audit.content.splitlines() if StopCause.BAN.audited_as in line]
        # Easel made the change; the banned member is named in its value.
        assert f"<@{fake.bot_user_id}> {StopCause.BAN.audited_as}: — → <@{RAIDER}>: " in entry, (
            entry
        )
        assert all(job_id in entry for job_id in here), entry

        # A ban landing while a command is handled, before its job is queued (as while a
        # Vary (Region) mask is found in words): nothing is queued, the acknowledgement goes.
        stop_while_handled(bot, other.guild_id, RAIDER)
        late = await fake.invoke_command(
            "imagine", {"prompt": "a late raid", **QUICK}, user=RAIDER, channel=other.channel_id
        )
        await late.wait_for_original_deleted()
        assert await bot.services.history.unfinished(RAIDER, guild_id=other.guild_id) == []
        assert engine.rendered and all("raid" not in r.prompt for r in engine.rendered)
