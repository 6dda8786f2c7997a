"""A private result stays private on every path, the spoiler policy holds on every path, and
results belong to the server they were made in — through the fake Discord."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.jobs.queue.values import PRIVATELY, FinishedJob
from bot.policy.visibility import NOT_YOURS_TO_CLICK
from bot.settings import Settings
from cogs.history import EASEL_LOST_THE_CHANNEL, LOST_THE_CHANNEL
from cogs.results.posting import DiscordResults
from cogs.visibility import EASEL_LOST_SIGHT
from db import jobs as journal
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    has_picture,
    imagine,
    job_id_of,
    past_the_tokens,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.payloads import PERMISSION_VIEW_CHANNEL
from tests.support.engines import HeldEngine

OTHER = 5151


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """Commands synced globally: a dev guild's commands exist only in that one server."""
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


def public_messages(fake: FakeDiscord) -> list[StoredMessage]:
    """What everyone in the guild channel can see."""
    return [
        m
        for m in fake.messages.values()
        if m.channel_id == fake.channel_id and not m.is_ephemeral and not m.deleted
    ]


async def keep_private(fake: FakeDiscord, private: bool = True) -> None:
    await reply_to(fake, "settings", {"private_results": private})


async def test_a_private_result_whose_token_expired_goes_by_direct_message(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        await keep_private(fake_discord)
        await deliver_after_token_expiry(fake_discord, bot, "a secret cat")
        direct = await fake_discord.wait_for_channel_message(
            has_picture,
            timeout=RENDER_TIMEOUT_S,
            channel=fake_discord.dm_channel_of(fake_discord.user_id),
        )
        assert "a secret cat" in direct.content
        # Its buttons would be refused outside the server; /show there brings them back.
        assert direct.custom_ids == [] and f"`/show {job_id_of(direct)}` there" in direct.content
        assert not any(
            has_picture(m) or "secret" in m.content for m in public_messages(fake_discord)
        )
        # Not a post in the server: nothing for a moderator or /forget-me to delete there.
        # Its DMs given as /forget-me gives them (other members' DM copies would be deleted).
        dms = fake_discord.dm_channel_of(fake_discord.user_id)
        forgotten = await bot.services.history.forget(fake_discord.user_id, direct_messages=dms)
        assert forgotten.posts == ()


async def test_private_results_turned_on_while_the_job_renders_keep_its_result_private(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The maker's setting at delivery decides: their result is a follow-up only they see;
    the public response shows neither picture nor prompt."""
    engine = HeldEngine()
    async with start_easel(lambda _device: engine):
        handle = await fake_discord.invoke_command("imagine", {"prompt": "my diary", **QUICK})
        await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
        await keep_private(fake_discord)
        engine.released.set()
        result = await handle.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
        assert result.is_ephemeral and "my diary" in result.content
        original = await handle.wait_for_original(lambda m: "went" in m.content)
        assert original.content == (
            f"Job `{job_id_of(result)}` ended; its result went to its maker alone."
        )
        assert not any(
            has_picture(m) or "diary" in m.content for m in public_messages(fake_discord)
        )


async def shown_privately_for_good(fake: FakeDiscord, result: StoredMessage) -> None:
    """``result``'s job, made private by its maker's /settings, stays so with private results
    off: their /show shows it to them alone, and another member's click on its buttons is
    refused as if the job did not exist."""
    job_id = job_id_of(result)
    shown = await fake.invoke_command("show", {"job_id": job_id})
    assert (await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)).is_ephemeral
    click = await fake.click(result, label="DM me", user=OTHER)
    forged = await click.wait_for_original(lambda m: not m.is_loading)
    assert forged.is_ephemeral and f"Job `{job_id}` is no longer in the history" in forged.content


async def test_a_job_made_private_while_it_renders_stays_private_for_good(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Private results turned on while it renders, then off again before it ends (AUD7, H1):
    the job became private when they were turned on, so its result still goes to its maker
    alone, their /show of it shows it to them alone, and another member's click on its
    buttons (a forged one: the result is ephemeral) finds nothing."""
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    with HeldEngine() as engine:
        async with start_easel(lambda _device: engine):
            handle = await fake_discord.invoke_command("imagine", {"prompt": "my diary", **QUICK})
            await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            await keep_private(fake_discord)
            await keep_private(fake_discord, False)
            engine.released.set()
            result = await handle.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
            job_id = job_id_of(result)
            assert result.is_ephemeral
            await handle.wait_for_original(lambda m: "went" in m.content and job_id in m.content)
            await shown_privately_for_good(fake_discord, result)
            assert not any(
                has_picture(m) or "diary" in m.content for m in public_messages(fake_discord)
            )


async def test_a_job_the_settings_save_missed_is_made_private_by_its_delivery(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job journaled in the open just after its maker's save of private results (acknowledged
    before it) is not among those the save made private: its delivery, which posts it to its
    maker alone, makes it private then, for /show, buttons and the dashboard alike."""

    async def missed(_conn: object, _user_id: int) -> int:
        return 0

    monkeypatch.setattr(journal, "make_undelivered_private", missed)
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    with HeldEngine() as engine:
        async with start_easel(lambda _device: engine) as bot:
            handle = await fake_discord.invoke_command("imagine", {"prompt": "my diary", **QUICK})
            await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            await keep_private(fake_discord)
            engine.released.set()
            result = await handle.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
            assert result.is_ephemeral
            job = await bot.services.history.job(job_id_of(result))
            assert job is not None and job.private
            await keep_private(fake_discord, False)
            await shown_privately_for_good(fake_discord, result)


async def test_a_result_posted_in_the_open_as_its_maker_saves_private_results_stays_public(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The maker's save of private results lands after their job's delivery read them off, as
    it posts the result in the channel (F7A review): the save made the job private, but its
    picture is public, so its delivery makes it public again, and another member's click on
    its buttons works as on any public result."""
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    read_setting = DiscordResults._private_now

    async def read_then_saved(results: DiscordResults, job: FinishedJob) -> bool:
        now = await read_setting(results, job)
        await keep_private(fake_discord)
        return now

    delivered = asyncio.Event()
    mark_delivered = journal.mark_delivered

    async def marked(*args: Any, **kwargs: Any) -> bool:
        try:
            return await mark_delivered(*args, **kwargs)
        finally:
            delivered.set()

    monkeypatch.setattr(DiscordResults, "_private_now", read_then_saved)
    monkeypatch.setattr(journal, "mark_delivered", marked)
    async with start_easel() as bot:
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert not result.is_ephemeral  # posted in the open
        await asyncio.wait_for(delivered.wait(), RENDER_TIMEOUT_S)
        job = await bot.services.history.job(job_id_of(result))
        assert job is not None and not job.private
        click = await fake_discord.click(result, label="DM me", user=OTHER)
        clicked = await click.wait_for_original(lambda m: not m.is_loading)
        assert clicked.content == "Sent to your direct messages.", clicked.content


FOLLOW_UP_ROUTE = "/webhooks/{app}/{token}"


async def test_a_job_made_private_since_whose_follow_up_fails_says_nothing_false(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Private results turned on while it renders, the ephemeral follow-up refused by Discord
    and the member's direct messages closed: its result reached no one, and the public
    response never says it went to its maker (review R_FINA: it said so before the send)."""
    fake = fake_discord
    fake.revoke_send_messages(fake.dm_channel_of(fake.user_id))
    engine = HeldEngine()
    async with start_easel(lambda _device: engine):
        handle = await fake.invoke_command("imagine", {"prompt": "my diary", **QUICK})
        await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
        await keep_private(fake)
        fake.fail("POST", FOLLOW_UP_ROUTE, times=10)
        engine.released.set()
        original = await handle.wait_for_original(lambda m: "ended" in m.content)
        async with asyncio.timeout(RENDER_TIMEOUT_S):  # the follow-up was tried, and refused
            while not fake.calls_to("POST", FOLLOW_UP_ROUTE):  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.05)
        assert handle.original is not None
        assert handle.original.content == original.content
        assert original.content.endswith("ended; its result is being sent to its maker alone.")
        assert not any(has_picture(m) or "diary" in m.content for m in public_messages(fake))


async def test_private_results_turned_on_while_the_job_waits_send_it_by_direct_message(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Its token expired: the private path of an expired job (direct messages), and the
    public progress message says only that it ended."""
    async with start_easel() as bot:
        posted = await deliver_after_token_expiry(
            fake_discord, bot, "my secret diary", meanwhile=lambda: keep_private(fake_discord)
        )
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is PRIVATELY  # in no channel
        direct = await fake_discord.wait_for_channel_message(
            has_picture,
            timeout=RENDER_TIMEOUT_S,
            channel=fake_discord.dm_channel_of(fake_discord.user_id),
        )
        assert "my secret diary" in direct.content
        assert not any(
            has_picture(m) or "diary" in m.content for m in public_messages(fake_discord)
        )


async def test_a_job_made_private_since_says_where_it_is_when_direct_messages_are_closed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Private results turned on while it renders, its token expired by its end, the
    member's direct messages closed: its result is posted nowhere, and its public progress
    message says it ended and that /show brings it back (review R_AUD1: it said "its result
    went to its maker alone", falsely)."""
    fake = fake_discord
    fake.revoke_send_messages(fake.dm_channel_of(fake.user_id))
    engine = HeldEngine()
    async with start_easel(lambda _device: engine) as bot:
        handle = await fake.invoke_command("imagine", {"prompt": "my diary", **QUICK})
        await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
        await handle.wait_for_original(lambda m: "Rendering" in m.content)  # its progress
        await keep_private(fake)
        past_the_tokens(fake, bot, 16 * 60)
        engine.released.set()
        original = await handle.wait_for_original(lambda m: "ended" in m.content)
        [line] = (await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)).lines
        job_id = line.job_id
        assert original.content == f"Job `{job_id}` ended; `/show {job_id}` brings its result back."
        assert not any(has_picture(m) or "diary" in m.content for m in public_messages(fake))


async def test_a_private_result_is_posted_nowhere_when_direct_messages_are_closed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    direct_channel = fake_discord.dm_channel_of(fake_discord.user_id)
    fake_discord.revoke_send_messages(direct_channel)
    async with start_easel() as bot:
        await keep_private(fake_discord)
        posted = await deliver_after_token_expiry(fake_discord, bot, "a secret cat")
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is None
        assert not any(has_picture(m) for m in public_messages(fake_discord))

        # The member still gets it, privately, with /show.
        [line] = (
            await bot.services.history.page(fake_discord.user_id, 0, guild_id=fake_discord.guild_id)
        ).lines
        show = await fake_discord.invoke_command("show", {"job_id": line.job_id})
        shown = await show.wait_for_original(has_picture)
        assert shown.is_ephemeral


async def test_buttons_and_show_on_a_private_result_answer_privately(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    async with start_easel() as bot:
        await keep_private(fake_discord)
        grid = await imagine(fake_discord, "two secret cats", count=2)
        assert grid.is_ephemeral
        # The job's privacy decides, not the member's setting at the time of the click.
        await keep_private(fake_discord, False)

        picked = await (await fake_discord.click(grid, label="U1")).wait_for_original(has_picture)
        varied = await (await fake_discord.click(grid, label="V2")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        rerolled = await (
            await fake_discord.click(grid, next(c for c in grid.custom_ids if "reroll" in c))
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        upscaled = await (await fake_discord.click(picked, label="Upscale (2x)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert picked.is_ephemeral and varied.is_ephemeral
        assert rerolled.is_ephemeral and upscaled.is_ephemeral

        show = await fake_discord.invoke_command("show", {"job_id": job_id_of(grid)})
        shown = await show.wait_for_original(has_picture)
        assert shown.is_ephemeral
        theirs = await reply_to(fake_discord, "show", {"job_id": job_id_of(grid)}, user=OTHER)
        assert theirs.is_ephemeral and "You have no job" in theirs.content
        assert not any(has_picture(m) for m in public_messages(fake_discord))
        # Ephemeral results are in no channel: nothing for /forget-me to delete there.
        # Its DMs given as /forget-me gives them (other members' DM copies would be deleted).
        dms = fake_discord.dm_channel_of(fake_discord.user_id)
        forgotten = await bot.services.history.forget(fake_discord.user_id, direct_messages=dms)
        assert forgotten.posts == ()


async def test_the_spoiler_policy_holds_for_previews_picks_and_show(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        await reply_to(
            fake_discord, "easel-admin nsfw", {"policy": "spoiler"}, user=fake_discord.owner_id
        )
        await keep_private(fake_discord)
        long_job = await fake_discord.invoke_command(
            "imagine", {"prompt": "a long secret cat", "steps": 150, "size": "256x256"}
        )
        progress = await long_job.wait_for_original(
            lambda m: "Rendering" in m.content and bool(m.attachments), timeout=RENDER_TIMEOUT_S
        )
        # A private job's previews ride on its ephemeral response only, behind a spoiler.
        assert progress.is_ephemeral
        assert [a.filename for a in progress.attachments] == ["SPOILER_preview.jpg"]
        assert not any(m.attachments for m in public_messages(fake_discord))
        await (await fake_discord.click(progress, progress.custom_ids[0])).wait_for_original()

        await keep_private(fake_discord, False)
        grid = await imagine(fake_discord, "two cats", count=2)
        picked = await (await fake_discord.click(grid, label="U2")).wait_for_original(has_picture)
        show = await fake_discord.invoke_command("show", {"job_id": job_id_of(grid)})
        shown = await show.wait_for_original(has_picture)
        for message in (grid, picked, shown):
            assert not message.is_ephemeral
            assert all(a.filename.startswith("SPOILER_") for a in message.attachments), message


async def test_results_belong_to_the_server_they_were_made_in(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    other = fake_discord.add_guild("Other server")
    fake_discord.add_member(
        fake_discord.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id
    )
    async with start_easel():
        grid = await imagine(fake_discord, "a cat from here", count=2)
        job_id = job_id_of(grid)

        shown = await reply_to(fake_discord, "show", {"job_id": job_id}, channel=other.channel_id)
        assert shown.is_ephemeral and "You have no job" in shown.content and not shown.attachments
        listed = await reply_to(fake_discord, "history", channel=other.channel_id)
        assert job_id not in listed.content and "You have no jobs yet" in listed.content
        assert job_id in (await reply_to(fake_discord, "history")).content

        # A message in the other server that carries this job's buttons (say, a copy of the
        # result): its clicks are refused and nothing is made there.
        copy = await fake_discord.post_user_message(
            "a copy", user=fake_discord.bot_user_id, channel=other.channel_id
        )
        copy.payload["components"] = grid.components
        for label in ("U1", "V2"):
            refused = await (await fake_discord.click(copy, label=label)).wait_for_original()
            assert refused.is_ephemeral and "no longer in the history" in refused.content
        assert not any(
            has_picture(m) for m in fake_discord.messages.values() if m.guild_id == other.guild_id
        )


async def test_show_posts_a_job_again_only_while_its_maker_can_read_its_channel(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/show asks what the job's buttons ask (audit AUD1, finding 1: it checked only that the
    job was the member's and of this server): a maker taken off the channel the job was made
    in, or out of the private thread, no longer posts its pictures and prompt elsewhere."""
    fake = fake_discord
    club = fake.add_text_channel("club", visible_to=[fake.user_id])
    plans = fake.add_thread("plans", private=True, members=[fake.bot_user_id])
    async with start_easel():
        made = {}
        for where, prompt in ((club, "the club's secret"), (plans, "the thread's plan")):
            handle = await fake.invoke_command(
                "imagine", {"prompt": prompt, **QUICK}, channel=where
            )
            made[where] = job_id_of(await handle.wait_for_original(has_picture, RENDER_TIMEOUT_S))
        fake.set_overwrite(club, fake.user_id, deny=PERMISSION_VIEW_CHANNEL)
        fake.set_thread_member(plans, fake.user_id, member=False)
        for job_id in made.values():
            refused = await reply_to(fake, "show", {"job_id": job_id})
            assert refused.is_ephemeral and not refused.attachments, refused
            assert LOST_THE_CHANNEL.format(job_id) in refused.content  # nothing of the job's
        assert not any(has_picture(m) for m in public_messages(fake))

        # Back in the channel: shown again (the refusal was the channel's, not the job's).
        fake.set_overwrite(club, fake.user_id, allow=PERMISSION_VIEW_CHANNEL)
        shown = await fake.invoke_command("show", {"job_id": made[club]})
        assert "the club's secret" in (await shown.wait_for_original(has_picture)).content


CHANNEL_ROUTE = "/channels/{channel}"


async def test_show_of_a_job_from_an_archived_thread_asks_discord_for_the_thread_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Discord archives every quiet thread and discord.py's cache then drops it: /show
    elsewhere of a job made there asks Discord for the thread once (review R_AUD1: refused as
    unreadable) and reads it by its parent's permissions; while Discord does not answer, the
    member is told to try again, not that they lost the channel."""
    fake = fake_discord
    thread = fake.add_thread("quiet")
    async with start_easel():
        handle = await fake.invoke_command(
            "imagine", {"prompt": "a lighthouse", **QUICK}, channel=thread
        )
        job_id = job_id_of(await handle.wait_for_original(has_picture, RENDER_TIMEOUT_S))
        await fake.archive_thread(thread)
        asked = len(fake.calls_to("GET", CHANNEL_ROUTE))
        shown = await fake.invoke_command("show", {"job_id": job_id})
        assert "a lighthouse" in (await shown.wait_for_original(has_picture)).content
        assert len(fake.calls_to("GET", CHANNEL_ROUTE)) == asked + 1  # one ask, not two

        fake.fail("GET", CHANNEL_ROUTE)
        refused = await reply_to(fake, "show", {"job_id": job_id})
        assert refused.is_ephemeral and not refused.attachments, refused
        assert "try again" in refused.content
        assert LOST_THE_CHANNEL.format(job_id) not in refused.content


async def test_show_says_easel_lost_a_private_thread_not_the_member(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Easel taken out of an archived private thread the member is still in: Discord refuses
    Easel the thread (403), and /show says so, not that the member can no longer read it
    (review R_FINA: both were "gone")."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    async with start_easel():
        handle = await fake.invoke_command(
            "imagine", {"prompt": "a lighthouse", **QUICK}, channel=thread
        )
        job_id = job_id_of(await handle.wait_for_original(has_picture, RENDER_TIMEOUT_S))
        fake.set_thread_member(thread, fake.bot_user_id, member=False)
        await fake.archive_thread(thread)
        refused = await reply_to(fake, "show", {"job_id": job_id})
        assert refused.is_ephemeral and not refused.attachments, refused
        assert EASEL_LOST_THE_CHANNEL.format(job_id) in refused.content
        assert LOST_THE_CHANNEL.format(job_id) not in refused.content


async def test_a_click_in_a_private_thread_easel_was_taken_out_of_says_so(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Easel taken out of a private thread its member is still in: a button clicked there
    asks Discord whether the clicker is in the thread, and Discord refuses Easel (403). The
    click is refused (nothing is known), saying Easel lost the thread, as /show says, not
    that the picture was made in a channel the member cannot read (review L1)."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    async with start_easel() as bot:
        handle = await fake.invoke_command(
            "imagine", {"prompt": "a lighthouse", **QUICK}, channel=thread
        )
        result = await handle.wait_for_original(has_picture, RENDER_TIMEOUT_S)
        fake.set_thread_member(thread, fake.bot_user_id, member=False)
        # Any "yes" Discord gave about the clicker earlier is forgotten (kept 30 s).
        monkeypatch.setattr(bot.services.thread_members, "is_member", lambda *_: False)
        click = await fake.click(result, label="DM me")
        refused = await click.wait_for_original(lambda m: not m.is_loading)
        assert refused.is_ephemeral and not refused.attachments, refused
        assert EASEL_LOST_SIGHT in refused.content
        assert NOT_YOURS_TO_CLICK not in refused.content
