"""A gap in the gateway that Discord does not resume (INVALID_SESSION, then a new IDENTIFY and
READY): none of the gap's events is sent again. A member banned in it has their unfinished
jobs cancelled once Easel asks Discord about them, as at start-up; a result a moderator
deleted in it is found deleted before /show or U1-U4 posts it again, and its job withdrawn (its
other posts deleted; the result, found gone, never asked to be deleted). Over the fake
Discord."""

from __future__ import annotations

import asyncio
from typing import cast

import aiohttp
import pytest

from bot import unheard_deletions
from bot.app import EaselBot, build
from bot.bans import StopCause
from bot.policy.delivery import SANCTION_STOPPED
from bot.policy.moderation import WITHDRAWN_PICTURE
from bot.settings import Settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    link_of,
    past_the_tokens,
    reply_to,
    with_web_server,
)
from tests.e2e.test_region import mask_form, region_offer
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_VIEW_CHANNEL
from tests.support.engines import HeldEngine

BANNED_IN_THE_GAP = 6801
POST_LOOKUP = ("GET", "/channels/{channel}/messages/{message}")
POST_DELETE = ("DELETE", "/channels/{channel}/messages/{message}")


async def new_session(fake: FakeDiscord) -> None:
    """The gateway drops and Discord does not resume the session: Easel identifies again."""
    identified = fake._gateway.identify_count
    await fake.drop_gateway_connection(resumable=False)
    await fake.wait_until_identified(RENDER_TIMEOUT_S, times=identified + 1)


@pytest.mark.parametrize("queued_too", [True, False], ids=["rendering and queued", "rendering"])
async def test_a_member_banned_in_a_gap_not_resumed_has_their_jobs_cancelled(
    fake_discord: FakeDiscord, start_easel: StartEasel, queued_too: bool
) -> None:
    fake = fake_discord
    fake.add_member(BANNED_IN_THE_GAP, "banned", roles=(fake.member_role_id,))
    engine = HeldEngine()
    async with start_easel(lambda device: engine):
        with engine:
            running = await fake.invoke_command(
                "imagine", {"prompt": "a raid rendering", **QUICK}, user=BANNED_IN_THE_GAP
            )
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            handles = [running]
            if queued_too:
                queued = await fake.invoke_command(
                    "imagine", {"prompt": "a raid queued", **QUICK}, user=BANNED_IN_THE_GAP
                )
                await queued.wait_for_original(lambda m: not m.is_loading)
                handles.append(queued)
            # Banned while the gateway is down: its GUILD_BAN_ADD went to a session now gone.
            fake._state.remove_member(BANNED_IN_THE_GAP, fake.guild_id)
            await new_session(fake)
            for handle in handles:
                await handle.wait_for_original(lambda m: SANCTION_STOPPED in m.content, timeout=30)
            engine.released.set()
        after = await fake.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        await after.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert [m for m in fake.messages.values() if has_picture(m) and "raid" in m.content] == []
        assert [request.prompt for request in engine.rendered] == ["a lighthouse"]
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        by_easel = f"<@{fake.bot_user_id}> {StopCause.GONE.audited_as}: — → <@{BANNED_IN_THE_GAP}>"
        assert by_easel in audit.content, audit.content


async def made_and_shown(fake: FakeDiscord, count: int) -> tuple[StoredMessage, StoredMessage]:
    """A result of ``count`` pictures, and its /show post: the buttons clicked after the gap."""
    made = await fake.invoke_command(
        "imagine", {"prompt": "rule-breaking art", "count": count, **QUICK}
    )
    result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    shown = await fake.invoke_command("show", {"job_id": job_id_of(result)})
    return result, await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


def posts_asked(fake: FakeDiscord) -> list[int]:
    """The messages Easel asked Discord about one by one, in order."""
    return [int(call.path.rsplit("/", 1)[1]) for call in fake.calls_to(*POST_LOOKUP)]


def deletes_asked(fake: FakeDiscord) -> list[int]:
    """The messages Easel asked Discord to delete in a server's channels, in order."""
    return [int(call.path.rsplit("/", 1)[1]) for call in fake.calls_to(*POST_DELETE)]


async def until_deleted(*posts: StoredMessage) -> None:
    """Until Easel deleted ``posts`` (polled: a withdrawal's sweep deletes them in the
    background; the limit bounds a hang, never a speed)."""
    for _ in range(int(RENDER_TIMEOUT_S / 0.05)):
        if all(post.deleted for post in posts):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"after {RENDER_TIMEOUT_S} s, not deleted: {[p.id for p in posts]}")


@pytest.fixture
def ids_on_easels_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake makes its ids on Easel's own clock: no slack for a host clock behind
    Discord's, so a post made after a session began is one made in it."""
    monkeypatch.setattr(unheard_deletions, "CLOCK_SLACK_S", 0.0)


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_with_no_gap_nothing_is_asked_before_a_repost_or_a_new_job(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Connected since the job's posts were made (a RESUMED replays what a dropped connection
    missed), Easel heard any deletion of them: /show, U1, V2 and DM me ask Discord nothing."""
    fake = fake_discord
    async with start_easel():
        _, shown_again = await made_and_shown(fake, count=2)
        pick = await fake.click(shown_again, label="U1")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        vary = await fake.click(shown_again, label="V2")
        await vary.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await fake.drop_gateway_connection(resumable=True)
        await fake.wait_for_resume()
        copy = await fake.click(shown_again, label="DM me")
        assert not (await copy.wait_for_original(lambda m: not m.is_loading)).is_loading
    assert posts_asked(fake) == []


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_after_a_gap_each_earlier_post_is_asked_about_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """After a session Discord did not resume, the first click asks about the job's posts made
    before it; the next clicks, /show and V1 ask nothing (those were found there, the new U1
    post made in the session); after another such gap, every post is asked about again."""
    fake = fake_discord
    async with start_easel() as bot:
        result, shown_again = await made_and_shown(fake, count=2)
        job_id = job_id_of(result)
        await new_session(fake)
        pick = await fake.click(shown_again, label="U1")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert sorted(posts_asked(fake)) == sorted([result.id, shown_again.id])
        pick = await fake.click(shown_again, label="U2")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        again = await fake.invoke_command("show", {"job_id": job_id})
        await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        vary = await fake.click(shown_again, label="V1")
        await vary.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert len(posts_asked(fake)) == 2
        posts = {post.message_id for post in await bot.services.history.posts_of(job_id)}
        assert len(posts) == 5  # the result, two /show posts and two U posts
        await new_session(fake)
        pick = await fake.click(shown_again, label="U1")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert sorted(posts_asked(fake)[2:]) == sorted(posts)


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_while_disconnected_every_post_is_asked_about_until_the_resume(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """discord.py dispatches "disconnect" as a connection drops: until the RESUMED, a deletion
    may go unheard. Only the mask editor's submit comes in meanwhile; here the event is
    dispatched on a connection kept up, so that a click can ask."""
    fake = fake_discord
    async with start_easel() as bot:
        result, shown_again = await made_and_shown(fake, count=2)
        bot.dispatch("disconnect")
        pick = await fake.click(shown_again, label="U1")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert sorted(posts_asked(fake)) == sorted([result.id, shown_again.id])
        await fake.drop_gateway_connection(resumable=True)
        await fake.wait_for_resume()
        pick = await fake.click(shown_again, label="U2")
        await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert len(posts_asked(fake)) == 2


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_a_result_deleted_while_easel_could_not_view_its_channel_is_not_posted_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """In one gateway session, Easel loses View Channel where its result is, a moderator
    deletes the result (no MESSAGE_DELETE reaches Easel), and View Channel comes back: the
    next /show asks about the job's posts and finds it deleted."""
    fake = fake_discord
    elsewhere = fake.add_text_channel("elsewhere")
    async with start_easel():
        result, _ = await made_and_shown(fake, count=1)
        fake.set_overwrite(fake.channel_id, fake.bot_user_id, deny=PERMISSION_VIEW_CHANNEL)
        # Sends the queued CHANNEL_UPDATE now (the fake words it as the channel is when it
        # goes out), so that it says View Channel was denied.
        await fake.post_user_message("meanwhile", channel=elsewhere)
        await fake.delete_messages(result)
        fake.set_overwrite(fake.channel_id, fake.bot_user_id)
        again = await fake.invoke_command("show", {"job_id": job_id_of(result)})
        answer = await again.wait_for_answer(RENDER_TIMEOUT_S)
    assert answer.content == WITHDRAWN_PICTURE
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]  # the deletion found by asking


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_after_easel_joins_a_server_each_earlier_post_is_asked_about_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A server that removed Easel in this session adds it again (its deletions meanwhile went
    unannounced): the next /show asks about the posts made before, the one after nothing.
    discord.py dispatches "guild_join" for such a GUILD_CREATE; the fake's always says
    ``unavailable: false`` (a server back from an outage), so the test dispatches it."""
    fake = fake_discord
    async with start_easel() as bot:
        result, shown_again = await made_and_shown(fake, count=1)
        bot.dispatch("guild_join", bot.get_guild(fake.guild_id))
        for _ in range(2):
            again = await fake.invoke_command("show", {"job_id": job_id_of(result)})
            await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert sorted(posts_asked(fake)) == sorted([result.id, shown_again.id])


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_a_result_deleted_while_easel_was_out_of_a_private_thread_is_found_there(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Removed from a private thread (without Manage Threads), Easel hears none of its
    deletions; added back (THREAD_MEMBERS_UPDATE: discord.py's "thread_join"), /show there
    asks about the job's post and finds it deleted. That gap is the thread's alone: /show of
    a job in the channel, made before it, asks nothing."""
    fake = fake_discord
    secret = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    async with start_easel():
        outside, _ = await made_and_shown(fake, count=1)
        made = await fake.invoke_command(
            "imagine", {"prompt": "rule-breaking art", **QUICK}, channel=secret
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        fake.set_thread_member(secret, fake.bot_user_id, member=False)
        await fake.delete_messages(result)  # Easel cannot view the thread: not announced
        fake.set_thread_member(secret, fake.bot_user_id)
        again = await fake.invoke_command("show", {"job_id": job_id_of(result)}, channel=secret)
        assert (await again.wait_for_answer(RENDER_TIMEOUT_S)).content == WITHDRAWN_PICTURE
        shown = await fake.invoke_command("show", {"job_id": job_id_of(outside)})
        await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert posts_asked(fake) == [result.id]
    read = f"unknown-resource: message {result.id} is not in channel {secret}"
    assert fake.take_violations() == [read]


@pytest.mark.usefixtures("ids_on_easels_clock")
async def test_a_result_deleted_while_its_server_was_unavailable_is_found_once_it_is_back(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """A Discord outage takes a server down (GUILD_DELETE unavailable) and back (GUILD_CREATE:
    discord.py's "guild_available"): its deletions meanwhile were never announced. The next
    /show there asks about the job's posts, once; a job in another server is asked nothing."""
    fake = fake_discord
    other = fake.add_guild("Other server")
    fake.add_member(fake.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id)
    everywhere = easel_settings_for_test.model_copy(update={"dev_guild_id": None})
    async with running_bot(fake, build(everywhere)):
        kept, kept_shown = await made_and_shown(fake, count=1)
        made = await fake.invoke_command(
            "imagine", {"prompt": "rule-breaking art", **QUICK}, channel=other.channel_id
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        shown = await fake.invoke_command(
            "show", {"job_id": job_id_of(result)}, channel=other.channel_id
        )
        shown_again = await shown.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await fake.guild_outage(guild=other.guild_id)  # nothing deleted in it
        again = await fake.invoke_command(
            "show", {"job_id": job_id_of(result)}, channel=other.channel_id
        )
        await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert sorted(posts_asked(fake)) == sorted([result.id, shown_again.id])
        shown_again.deleted = True  # in the outage: its MESSAGE_DELETE is never sent
        await fake.guild_outage(guild=other.guild_id)
        for _ in range(2):
            here = await fake.invoke_command("show", {"job_id": job_id_of(kept)})
            await here.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        refused = await fake.invoke_command(
            "show", {"job_id": job_id_of(result)}, channel=other.channel_id
        )
        assert (await refused.wait_for_answer(RENDER_TIMEOUT_S)).content == WITHDRAWN_PICTURE
    assert kept_shown.id not in posts_asked(fake)
    assert len(posts_asked(fake)) == 2 + 3  # the job's three posts there, after the second
    read = f"unknown-resource: message {shown_again.id} is not in channel {other.channel_id}"
    assert fake.take_violations() == [read]


async def test_a_result_deleted_in_a_gap_not_resumed_is_not_posted_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        # Shown again before the gap: its U1 is clicked after it.
        result, shown_again = await made_and_shown(fake, count=2)
        job_id = job_id_of(result)
        # After a first gap, Discord cannot say whether the result is still there: U1 posts
        # all the same.
        await new_session(fake)
        fake.fail(*POST_LOOKUP, times=2, status=503)
        outage = await fake.click(shown_again, label="U1")
        picked = await outage.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        job = await bot.services.history.job(job_id)
        assert job is not None and not job.withdrawn
        # A moderator deletes the result in the gap: its MESSAGE_DELETE is never sent.
        result.deleted = True
        await new_session(fake)
        pick = await fake.click(shown_again, label="U1")
        assert (await pick.wait_for_answer(RENDER_TIMEOUT_S)).content == WITHDRAWN_PICTURE
        job = await bot.services.history.job(job_id)
        assert job is not None and job.withdrawn  # as the deletion heard withdraws it
        again = await fake.invoke_command("show", {"job_id": job_id})
        assert (await again.wait_for_answer(RENDER_TIMEOUT_S)).content == WITHDRAWN_PICTURE
        # The withdrawal takes its other posts down (the sweep, in the background).
        await until_deleted(shown_again, picked)
    assert [m for m in fake.messages.values() if has_picture(m) and not m.deleted] == []
    # Found deleted, the result is never asked to be deleted.
    assert deletes_asked(fake) == [shown_again.id, picked.id]
    # Found by the second U1: the job withdrawn, /show is refused before it asks.
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]


async def test_a_result_posted_apart_and_deleted_in_a_gap_is_found_by_show(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The result posted as a message of its own (the interaction's token ended while it
    waited): the progress message pointing to it is the job's first post, still there; the
    result's deletion is found all the same."""
    fake = fake_discord
    engine = HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            made = await fake.invoke_command("imagine", {"prompt": "rule-breaking art", **QUICK})
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            await made.wait_for_original(lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S)
            past_the_tokens(fake, bot, 16 * 60)
            engine.released.set()
            pointer = await made.wait_for_original(
                lambda m: "its result is posted here" in m.content, timeout=RENDER_TIMEOUT_S
            )
        [result] = [m for m in fake.messages.values() if has_picture(m) and m.id != pointer.id]
        job_id = job_id_of(result)
        result.deleted = True  # in the gap: its MESSAGE_DELETE is never sent
        await new_session(fake)
        again = await fake.invoke_command("show", {"job_id": job_id})
        assert (await again.wait_for_answer(RENDER_TIMEOUT_S)).content == WITHDRAWN_PICTURE
        job = await bot.services.history.job(job_id)
        assert job is not None and job.withdrawn
    assert [m for m in fake.messages.values() if has_picture(m) and not m.deleted] == []
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]


async def test_dm_me_finds_a_result_deleted_in_a_gap(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        result, shown_again = await made_and_shown(fake, count=1)
        job_id = job_id_of(result)
        result.deleted = True  # in the gap: its MESSAGE_DELETE is never sent
        await new_session(fake)
        copy = await fake.click(shown_again, label="DM me")
        refusal = await copy.wait_for_original(lambda m: not m.is_loading)
        assert refusal.is_ephemeral and refusal.content == WITHDRAWN_PICTURE
        job = await bot.services.history.job(job_id)
        assert job is not None and job.withdrawn
    direct = fake.dm_channel_of(fake.user_id)
    assert [m for m in fake.messages.values() if m.channel_id == direct] == []
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]


async def test_v2_of_a_result_deleted_in_a_gap_makes_no_new_job(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A picture edit is asked once acknowledged (``submit_from_interaction``), as 🔄, Remix,
    Vary (Region) and the message menus are: the job is refused, nothing charged or queued."""
    fake = fake_discord
    async with start_easel() as bot:
        result, shown_again = await made_and_shown(fake, count=2)
        job_id = job_id_of(result)
        result.deleted = True  # in the gap: its MESSAGE_DELETE is never sent
        await new_session(fake)
        vary = await fake.click(shown_again, label="V2")
        refusal = await vary.wait_for_answer(RENDER_TIMEOUT_S)
        assert refusal.is_ephemeral and refusal.content == WITHDRAWN_PICTURE
        job = await bot.services.history.job(job_id)
        assert job is not None and job.withdrawn
        jobs = await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)
        assert jobs.total == 1  # the deleted result's alone: V2 made no job
        await until_deleted(shown_again)  # with the withdrawn job's other posts
    assert [m.id for m in fake.messages.values() if has_picture(m) and not m.deleted] == []
    assert deletes_asked(fake) == [shown_again.id]
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]


async def test_the_mask_editor_makes_no_job_of_a_result_deleted_in_a_gap(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """The page's submit (``cogs.region``) asks as a button's new job does: a link opened
    before the deletion is refused in the withdrawn picture's words, nothing charged."""
    fake = fake_discord
    async with running_bot(fake, build(with_web_server(easel_settings_for_test))) as client:
        bot = cast(EaselBot, client)
        result = await imagine(fake, "a harbour")
        link = link_of(await region_offer(fake, result, fake.user_id))
        result.deleted = True  # in the gap: its MESSAGE_DELETE is never sent
        await new_session(fake)
        async with (
            aiohttp.ClientSession() as http,
            http.post(link, data=mask_form(painted=True)) as posted,
        ):
            assert posted.status == 403 and WITHDRAWN_PICTURE in await posted.text()
        job = await bot.services.history.job(job_id_of(result))
        assert job is not None and job.withdrawn
        jobs = await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)
        assert jobs.total == 1  # the deleted result's alone
    read = f"unknown-resource: message {result.id} is not in channel {fake.channel_id}"
    assert fake.take_violations() == [read]
