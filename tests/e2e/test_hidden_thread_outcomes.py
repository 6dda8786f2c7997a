"""What becomes of a result made in a thread Discord hides from Easel (a private thread it was
not added to), and of results Easel cannot post where they were made: the thread's channel
journaled with the job (0041) is read by DM me too; a picture nothing can bring back is
refunded and its maker told why."""

from __future__ import annotations

import asyncio

import pytest

from bot import app
from bot.app import build
from bot.jobs.queue import FinishedJob, Privately, job_queue
from bot.policy.delivery import UNSEEN_AND_DMS_CLOSED
from bot.settings import Settings
from cogs.results import posting
from db import jobs as journal
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    images_today,
    journaled_before_start,
    kept_undelivered,
    reply_to,
)
from tests.e2e.test_allowed_servers import all_delivered, dms_to
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import InstantEngine
from tests.support.pictures import has_picture

DM_ROUTE = ("POST", "/users/@me/channels")
CHANNEL = "/channels/{channel}"
B_MEMBER = 7002
# A stop, loaded machine included, ends well within this (without a wait on READY).
STOPPED_WITHIN_S = 60.0


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: another server's members may use Easel too.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


async def test_dm_me_keeps_a_hidden_threads_picture_whose_channel_turned_age_restricted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A private thread Easel was not added to, its channel made age-restricted since the
    job was made: DM me (clicked by its maker, a moderator whose thread it is) read the
    thread as hidden, not as age-restricted, and sent the picture to direct messages."""
    fake = fake_discord
    owner = fake.owner_id
    thread = fake.add_thread("secret", private=True, owner=owner)
    async with start_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "a cat", **QUICK}, channel=thread, user=owner
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        fake.set_nsfw(fake.channel_id, True)
        await reply_to(fake, "help", user=owner)  # delivers the change
        click = await fake.click(result, label="DM me", user=owner)
        answer = await click.wait_for_original(lambda m: not m.is_loading)
        assert "I do not send it to direct messages" in answer.content, answer.content
        direct = fake.dm_channel_of(owner)
        assert not [m for m in fake.messages.values() if m.channel_id == direct]
    fake.take_violations()  # Easel's calls in a thread it may not see: refused, as meant


@pytest.mark.parametrize("its_channel", ["as-it-was", "made-age-restricted"])
async def test_a_hidden_threads_result_with_dms_closed_is_refunded_and_recorded(
    fake_discord: FakeDiscord, start_easel: StartEasel, its_channel: str
) -> None:
    """Delivered after its token expired, a result of a private thread Easel was not added
    to, its maker's direct messages closed: nothing can bring it back (no post there, no DM,
    /show refuses it), yet it was charged and its maker told nowhere. Its channel made
    age-restricted meanwhile, the picture is kept from DMs and only a notice tried, which
    could not go either: the same (R_B1 #1). What its maker can read then, /history and
    /show once Easel is added to the thread, named a cause that was not it (R_B1 #2)."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    async with start_easel() as bot:

        async def dms_closed() -> None:
            if its_channel == "made-age-restricted":
                fake.set_nsfw(fake.channel_id, True)
                await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
            fake.fail(*DM_ROUTE, status=403, times=10)

        dms_before = len(fake.calls_to(*DM_ROUTE))
        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", thread, meanwhile=dms_closed
        )
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is None
        assert len(fake.calls_to(*DM_ROUTE)) - dms_before == 1  # refused once: not tried again
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
        [job] = await journal.jobs_with_status(bot._db, journal.JobStatus.DONE)
        assert job.withheld_why == UNSEEN_AND_DMS_CLOSED, job.withheld_why
        assert "add Easel" not in job.withheld_why  # withdrawn: adding Easel brings nothing
        listed = await reply_to(fake, "history")
        [line] = [line for line in listed.content.splitlines() if job.id in line]
        # Its maker is told why there too (it said only that Easel withheld it).
        assert f"not posted: {UNSEEN_AND_DMS_CLOSED}; not counted" in line, line
        fake.set_thread_member(thread, fake.bot_user_id)
        shown = (await reply_to(fake, "show", {"job_id": job.id}, channel=thread)).content
        assert "never posted" in shown and "rules" not in shown, shown
    fake.take_violations()


async def test_a_refused_edit_of_the_result_sends_it_by_dm(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Discord refuses (403) the interaction's edit that shows the result, where Easel may not
    post either: the result goes to its maker's direct messages, as where Easel may not
    post; it was refunded and dropped, though a DM could carry it."""
    fake = fake_discord
    fake.revoke_send_messages(fake.channel_id)
    async with start_easel() as bot:
        deliver = bot.results.deliver

        async def refused_edit(job: FinishedJob) -> int | Privately | None:
            watched = bot.results._watched.get(job.job_id)
            if watched is not None:
                await watched.settle()  # its progress edits done: the next edit is the result's
            fake.fail("PATCH", "/webhooks/{app}/{token}/messages/{message}", status=403)
            return await deliver(job)

        bot.queue.set_sink(type("Refused", (), {"deliver": staticmethod(refused_edit)})())
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        final = await handle.wait_for_original(
            lambda m: "ended" in m.content or "❌" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert "went to its maker's direct messages" in final.content, final.content
        copy = await fake.wait_for_channel_message(
            has_picture, channel=fake.dm_channel_of(fake.user_id), timeout=RENDER_TIMEOUT_S
        )
        job_id = final.content.split("`")[1]
        assert f"job `{job_id}`" in copy.content, copy.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1


async def rendered_then_stopped(
    fake: FakeDiscord, settings: Settings, **where: int
) -> InteractionHandle:
    """A quick /imagine (``where``: its ``user`` and ``channel``) rendered, and Easel stopped
    before its result was posted (the caller makes ``SHUTDOWN_GRACE_S`` short): its handle."""
    async with running_bot(fake, build(settings, lambda device: InstantEngine())) as bot:
        held = asyncio.Event()  # never set: the result stays undelivered at the stop
        bot.queue.set_sink(type("Held", (), {"deliver": staticmethod(lambda job: held.wait())})())
        handle = await fake.invoke_command("imagine", {"prompt": "a barn", **QUICK}, **where)
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            while not await journal.jobs_with_status(bot._db, journal.JobStatus.DONE):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    return handle


async def test_a_result_of_a_server_that_removed_easel_while_it_was_offline_is_refunded(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered, Easel stopped before posting it, removed from its server while offline: the
    start's delivery came before Discord's READY, when no server reads as left, so it was
    charged and its maker told that `/show` "there" brings it back."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    settings = easel_settings_for_test
    await rendered_then_stopped(fake, settings, user=B_MEMBER, channel=other.channel_id)
    await fake.remove_bot(guild=other.guild_id)
    fake.advance_time(16 * 60)
    async with running_bot(fake, build(settings, lambda device: InstantEngine())) as bot:
        await all_delivered(bot)
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
    [told] = dms_to(fake, B_MEMBER)
    assert "was not posted: Easel is no longer in the server it was made in" in told, told
    assert "/show" not in told, told
    fake.take_violations()


async def test_a_queued_job_of_a_server_that_removed_easel_while_it_was_offline_never_renders(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """Queued when Easel stopped, its server removed Easel while it was offline: the start's
    queue handed it out before Discord's READY, when no server reads as left, so it rendered
    (GPU time for nothing) and was refunded only at delivery. Its start waits for READY now,
    and the start gate ends it, refunded, never rendered."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    settings = easel_settings_for_test
    job_id = await journaled_before_start(
        fake, settings, B_MEMBER, "a barn", where=(other.guild_id, other.channel_id)
    )
    await fake.remove_bot(guild=other.guild_id)
    engine = InstantEngine()
    async with running_bot(fake, build(settings, lambda device: engine)) as bot:
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            while not dms_to(fake, B_MEMBER):  # noqa: ASYNC110 (the fake's messages)
                await asyncio.sleep(0.05)
        job = await journal.get_job(bot._db, job_id)
        assert job is not None and job.status is journal.JobStatus.CANCELLED, job
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
    assert engine.rendered == []
    [told] = dms_to(fake, B_MEMBER)
    assert "Easel is no longer in the server it was made in" in told, told
    fake.take_violations()


async def test_a_stop_while_a_delivery_waits_for_ready_ends_that_wait(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result left undelivered by a stop; the next start's delivery waits for Discord's
    READY (was Easel removed from its server meanwhile?), which does not come, and Easel is
    stopped: the stop waited for READY until the posts' grace ran out, then cancelled the
    delivery (R_B1 #3). The wait ends with the stop now; the start after it posts the
    result, charged once."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)
    fake = fake_discord
    settings = easel_settings_for_test
    handle = await rendered_then_stopped(fake, settings)
    # Every wait of the stop, and READY's, longer than the bound it is held to: only the end
    # of the wait for READY lets the stop end within it.
    for module, name in ((job_queue, "SHUTDOWN_GRACE_S"), (app, "STOP_BUDGET_S")):
        monkeypatch.setattr(module, name, 2 * STOPPED_WITHIN_S)
    monkeypatch.setattr(posting, "SERVER_WAIT_S", 2 * STOPPED_WITHIN_S)
    dispatch = fake.gateway.dispatch

    async def never_ready(event: str, data: dict[str, object]) -> None:
        if event not in ("READY", "GUILD_CREATE"):
            await dispatch(event, data)

    monkeypatch.setattr(fake.gateway, "dispatch", never_ready)
    bot = build(settings, lambda device: InstantEngine())
    waiting = asyncio.Event()
    wait_until_ready = bot.wait_until_ready

    async def noted_wait() -> None:
        waiting.set()
        await wait_until_ready()

    monkeypatch.setattr(bot, "wait_until_ready", noted_wait)

    async def stopped_once_waiting() -> None:
        await waiting.wait()
        async with asyncio.timeout(STOPPED_WITHIN_S):
            await bot.close()

    stopping = asyncio.create_task(stopped_once_waiting())
    with pytest.raises(TimeoutError, match="not ready"):  # it ended, never ready
        async with running_bot(fake, bot, ready_timeout=RENDER_TIMEOUT_S + STOPPED_WITHIN_S):
            pass
    await stopping  # raises TimeoutError where the stop waited for READY
    job, _, refunded = await kept_undelivered(settings)
    assert job.status is journal.JobStatus.DONE and not refunded
    monkeypatch.setattr(fake.gateway, "dispatch", dispatch)
    async with running_bot(fake, build(settings, lambda device: InstantEngine())) as bot:
        await all_delivered(bot)
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
    await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    fake.take_violations()


async def test_a_notice_reuses_discords_answer_that_a_hidden_threads_channel_is_restricted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A late result of a private thread hidden from Easel, its channel made age-restricted
    since: kept from direct messages once Discord refused Easel the thread, then its notice
    asked Discord the same question again (another wait, another 403)."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    thread_path = f"/channels/{thread}"
    asked: list[int] = []

    def asked_of_the_thread() -> int:
        return sum(call.path.endswith(thread_path) for call in fake.calls_to("GET", CHANNEL))

    async with start_easel() as bot:

        async def turned() -> None:
            fake.set_nsfw(fake.channel_id, True)
            await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
            asked.append(asked_of_the_thread())

        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", thread, meanwhile=turned
        )
        await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        told = "\n".join(dms_to(fake, fake.user_id))
        assert "is ready, but Easel cannot see the thread it was made in" in told, told
        assert asked_of_the_thread() == asked[0] + 1  # the delivery's one look, not two
    fake.take_violations()
