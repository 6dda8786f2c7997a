"""A kick or a timeout heard while Easel runs (the audit log entry Discord sends where Easel has
View Audit Log) cancels the member's unfinished jobs in that server, as a ban does; in a
timeout a member's click makes nothing there, told until when, and a timeout removed early
lets them work again at once; a kicked member back in the server works again. AutoMod's
timeout cancels too; the owner, whom Discord exempts, is not refused. The mask editor's submit
refuses a member stopped there. Over the fake Discord."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import aiohttp
import pytest

from bot.app import EaselBot, build
from bot.bans import Standing, StopCause
from bot.policy.delivery import SANCTION_STOPPED
from bot.settings import Settings
from cogs.bans import BansCog
from cogs.region import STOPPED_IN_SERVER
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    has_picture,
    images_today,
    imagine,
    link_of,
    reply_to,
    with_web_server,
)
from tests.e2e.test_moderation_commands import until
from tests.e2e.test_region import mask_form, region_offer
from tests.e2e.test_server_scope import RAIDER, acknowledged, stop_while_handled
from tests.e2e.test_taking_back import rendered_unposted
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_VIEW_AUDIT_LOG
from tests.support.engines import HeldEngine

KICKED = 6302
SPAMMER = 6303  # timed out by AutoMod


async def test_a_kick_or_timeout_cancels_the_members_jobs_there_until_the_timeout_ends(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))
    fake.add_member(KICKED, "kicked", roles=(fake.member_role_id,))
    fake.add_member(SPAMMER, "spammer", roles=(fake.member_role_id,))
    # A timeout left on the owner from before (a member timed out, then made the owner):
    # given before Easel runs, so it is not heard.
    await fake.time_out_member(fake.owner_id, time.time() + 600)
    # Discord sends the audit log's entries only to a bot that may read it.
    fake.grant_permissions(fake.bot_user_id, PERMISSION_VIEW_AUDIT_LOG)
    engine = HeldEngine()
    engine.released.set()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            shown = await fake.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
            lighthouse = await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            engine.released.clear()  # the raider's render is held running
            engine.started.clear()
            running = await acknowledged(fake, "a raid", fake.channel_id)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            queued = await acknowledged(fake, "another raid", fake.channel_id)
            kicked = await fake.invoke_command(
                "imagine", {"prompt": "a kicked raid", **QUICK}, user=KICKED
            )
            await kicked.wait_for_original(lambda m: not m.is_loading)

            until = int(time.time()) + 600
            await fake.time_out_member(RAIDER, until)
            for handle in (running, queued):
                await handle.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
            await fake.kick_member(KICKED)
            await kicked.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
            # AutoMod's timeout: its entry names no end.
            spam = await fake.invoke_command(
                "imagine", {"prompt": "a spam raid", **QUICK}, user=SPAMMER
            )
            await spam.wait_for_original(lambda m: not m.is_loading)
            await fake.automod_time_out_member(SPAMMER, until)
            told = await spam.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
            assert "moderator" not in told.content  # AutoMod's: no moderator acted

            # A button clicked in the timeout (Discord still sends it): nothing is made.
            reroll = next(c for c in lighthouse.custom_ids if c.startswith("easel:reroll:"))
            click = await fake.click(lighthouse, reroll, user=RAIDER)
            refused = await click.wait_for_original(lambda m: not m.is_loading)
            assert refused.is_ephemeral and f"until <t:{until}:f>" in refused.content
            # The owner's leftover timeout binds nothing: Discord exempts them.
            by_owner = await fake.click(lighthouse, reroll, user=fake.owner_id)
            assert await bot.services.history.unfinished(RAIDER, guild_id=fake.guild_id) == []

            # The timeout removed early: the same click works at once.
            await fake.time_out_member(RAIDER, None)
            again = await fake.click(lighthouse, reroll, user=RAIDER)
            await again.wait_for_original(lambda m: not m.is_loading)
            engine.released.set()
        await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await by_owner.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # Charged only for what was made after the timeout: the cancelled jobs are refunded.
        assert await images_today(bot.services, RAIDER, fake.guild_id) == 1
        assert await images_today(bot.services, KICKED, fake.guild_id) == 0
        assert await images_today(bot.services, SPAMMER, fake.guild_id) == 0
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        stops = (
            (StopCause.TIMEOUT, RAIDER),
            (StopCause.KICK, KICKED),
            (StopCause.TIMEOUT, SPAMMER),
        )
        for cause, member in stops:
            made_by_easel = f"<@{fake.bot_user_id}> {cause.audited_as}: — → <@{member}>: "
            assert made_by_easel in audit.content, audit.content


async def test_a_member_kicked_and_back_within_the_hour_makes_pictures_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Easel hears no joins (the members intent is privileged): the kick stops the work begun
    before it, not the commands of the member back in the server, which render and post."""
    fake = fake_discord
    fake.add_member(KICKED, "kicked", roles=(fake.member_role_id,))
    fake.grant_permissions(fake.bot_user_id, PERMISSION_VIEW_AUDIT_LOG)
    engine = HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            before = await fake.invoke_command(
                "imagine", {"prompt": "a raid", **QUICK}, user=KICKED
            )
            await before.wait_for_original(lambda m: not m.is_loading)
            await fake.kick_member(KICKED)
            await before.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)

            fake.add_member(KICKED, "kicked", roles=(fake.member_role_id,))  # joined again
            back = await fake.invoke_command(
                "imagine", {"prompt": "a homecoming", **QUICK}, user=KICKED
            )
            engine.released.set()
        await back.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert [r.prompt for r in engine.rendered] == ["a homecoming"]
        assert await images_today(bot.services, KICKED, fake.guild_id) == 1


async def test_the_mask_editors_submit_refuses_a_member_stopped_in_the_server(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """A link opened before the stop: the member fetched in a timeout is refused naming its
    end; one stopped after the fetch (a kick or ban heard meanwhile) queues nothing. And what
    the start-up check reads of Discord: a timeout's end (none for the owner, whom Discord
    exempts), Unknown Member, Unknown Guild."""
    fake = fake_discord
    fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))
    async with running_bot(fake, build(with_web_server(easel_settings_for_test))) as client:
        bot = cast(EaselBot, client)
        link = link_of(await region_offer(fake, await imagine(fake, "a harbour"), RAIDER))
        until = int(time.time()) + 600
        await fake.time_out_member(RAIDER, until)
        # What the start-up check reads of Discord (GET .../members/{user}).
        bans = cast(BansCog, bot.get_cog("BansCog"))
        assert await bans.standing(fake.guild_id, RAIDER) == Standing(timed_out_until=until)
        assert await bans.standing(fake.guild_id, KICKED) == Standing(gone=True)
        assert await bans.standing(fake.guild_id + 1, RAIDER) == Standing(server_gone=True)
        await fake.time_out_member(fake.owner_id, until)
        assert await bans.standing(fake.guild_id, fake.owner_id) == Standing()
        async with aiohttp.ClientSession() as http:
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and f"<t:{until}:f>" in await posted.text()
            await fake.time_out_member(RAIDER, None)
            stop_while_handled(bot, fake.guild_id, RAIDER)  # a kick heard after the fetch
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and STOPPED_IN_SERVER in await posted.text()
        assert (await bot.services.history.page(RAIDER, 0, guild_id=fake.guild_id)).total == 0


async def test_a_ban_lifted_lets_the_member_back_and_what_it_stopped_stays_stopped(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ban, then unban (GUILD_BAN_REMOVE) and join again. The ban's stop is forgotten at once,
    not after its hour: a result that finished before the ban, its post held until after the
    unban, is posted; the member's commands, and the mask-editor page they opened before the
    ban, work again. The job the ban stopped stays stopped and refunded (submitted again, it
    renders), and the audit keeps the ban's row, naming it, and no other."""
    fake = fake_discord
    fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))
    async with running_bot(fake, build(with_web_server(easel_settings_for_test))) as client:
        bot = cast(EaselBot, client)
        link = link_of(await region_offer(fake, await imagine(fake, "a harbour"), RAIDER))
        posts = calls_held(bot.results, "deliver", monkeypatch)
        finished, _ = await rendered_unposted(fake, bot, "a finished raid", user=RAIDER)
        starts = calls_held(bot.results, "why_not_started", monkeypatch)  # it stays queued
        raid = await fake.invoke_command("imagine", {"prompt": "a raid", **QUICK}, user=RAIDER)
        queued = await raid.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
        stopped = queued.custom_ids[0].rsplit(":", 1)[1]
        stops = bot.services.stopped_members

        async def ban_heard() -> bool:  # the gateway's event read: work begun before stops
            return stops.holds(fake.guild_id, RAIDER, began_at=0.0)

        async def unban_heard() -> bool:
            return not await ban_heard()

        await fake.ban_member(RAIDER)
        assert await until(ban_heard)  # else the start let go below could render the raid
        starts.set()
        async with aiohttp.ClientSession() as http:
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403  # no longer a member
            with pytest.raises(ValueError, match="banned"):  # Discord refuses their join
                fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))

            await fake.unban_member(RAIDER)
            assert await until(unban_heard)
            fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))  # joined again
            posts.set()
            await finished.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            await raid.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 200, await posted.text()
        again = await fake.invoke_command("imagine", {"prompt": "a raid", **QUICK}, user=RAIDER)
        await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        ended = await bot.services.history.job(stopped)
        assert ended is not None and ended.status == "cancelled"
        # The finished raid, the stopped one, the page's Vary (Region) and the raid again;
        # the stopped one refunded.
        assert (await bot.services.history.page(RAIDER, 0, guild_id=fake.guild_id)).total == 4
        assert await images_today(bot.services, RAIDER, fake.guild_id) == 3
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        _, entry = audit.content.splitlines()  # the ban's row alone
        assert f"{StopCause.BAN.audited_as}: — → <@{RAIDER}>: {stopped}" in entry, entry
