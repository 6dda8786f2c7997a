"""An admin who narrows a list while a job it leaves out renders (a first allowed channel that
is not the job's) stops that render at once, as a moderator's withdrawal stops one: refunded
whole, its maker told why (not "Cancelled"), the device free for the next job; rather than
rendered to its last step to be withheld at delivery. Over the fake Discord."""

from __future__ import annotations

import asyncio

from bot.jobs.accounting import Member
from bot.policy.delivery import CHANNEL_OFF
from bot.policy.quota import Period
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, reply_to
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine, InstantEngine, SharedBatchEngine

PARTNER = 7304


async def test_a_channel_closed_while_its_job_renders_stops_it_refunded_and_says_why(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    art = fake.add_text_channel("art")
    with HeldEngine() as engine:
        async with start_easel(lambda _device: engine) as bot:
            job = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            await job.wait_for_original(lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S)
            # Its render is under way, held until released (or stopped).
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            await reply_to(
                fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
            )
            ended = await job.wait_for_original(
                lambda m: "not posted" in m.content, timeout=RENDER_TIMEOUT_S
            )
            assert "Cancelled" not in ended.content and not ended.attachments
            told = await fake.wait_for_channel_message(
                lambda m: CHANNEL_OFF in m.content, channel=fake.dm_channel_of(fake.user_id)
            )
            assert "does not count against your quota" in told.content
            # Told once its render ends: the list may have changed back by then.
            assert "as the server's settings stood when it was stopped" in told.content
            report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
            [today] = [usage for usage in report.periods if usage.period is Period.DAY]
            assert (today.images, today.gpu_seconds) == (0, 0)
    assert engine.rendered == []  # stopped while held: no step of it ran


async def test_a_restart_before_its_batch_ends_tells_the_narrowings_why(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A job the narrowing stopped while its batch renders on for a partner's picture, Easel
    stopped before that batch ends (a deploy): the next start judges it by the rules then, and
    its maker is told the real why (not that a sanction stopped it), refunded whole."""
    fake = fake_discord
    fake.add_member(PARTNER, "partner")
    art = fake.add_text_channel("art")
    quick = {"steps": 40, "size": "64x64"}
    with SharedBatchEngine(seconds=5.0) as engine:  # steps paced: progress shows them
        engine.finish_lone.clear()
        async with start_easel(lambda _device: engine):
            # Renders first (another size), held: the two after it wait, then render as one
            # batch.
            first = await fake.invoke_command(
                "imagine",
                {"prompt": "a first", "steps": 40, "size": "128x128"},
                user=PARTNER,
                channel=art,
            )
            await first.wait_for_original(
                lambda m: "Rendering" in m.content, timeout=RENDER_TIMEOUT_S
            )
            mine = await fake.invoke_command("imagine", {"prompt": "my cat", **quick})
            theirs = await fake.invoke_command(
                "imagine", {"prompt": "their dog", **quick}, user=PARTNER, channel=art
            )
            for queued in (mine, theirs):
                await queued.wait_for_original(lambda m: "Queued" in m.content)
            engine.finish_lone.set()
            await mine.wait_for_original(lambda m: "step" in m.content, timeout=RENDER_TIMEOUT_S)
            await reply_to(
                fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
            )
            await mine.wait_for_original(lambda m: "⏹️ Stopped" in m.content)
        # Stopped while the batch is held before its last step, its end not yet written.
    async with start_easel(lambda _device: InstantEngine()) as bot:
        ended = await mine.wait_for_original(
            lambda m: "not posted" in m.content or "Stopped (job" in m.content,
            timeout=RENDER_TIMEOUT_S,
        )
        assert "not posted" in ended.content and not ended.attachments
        told = await fake.wait_for_channel_message(
            lambda m: CHANNEL_OFF in m.content, channel=fake.dm_channel_of(fake.user_id)
        )
        assert "does not count against your quota" in told.content
        report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
        [today] = [usage for usage in report.periods if usage.period is Period.DAY]
        assert (today.images, today.gpu_seconds) == (0, 0)
