"""Pictures made under a server's age restriction never go to direct messages, which no server
age-gates: DM me, results by DM and an expired private result — through the fake Discord."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.jobs.queue import FinishedJob
from bot.policy.moderation import AGE_RESTRICTED_PICTURE, AGE_RESTRICTED_STAYS_IN_THE_SERVER
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    has_picture,
    imagine,
    job_id_of,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage


def direct_pictures(fake: FakeDiscord) -> list[StoredMessage]:
    direct = fake.dm_channel_of(fake.user_id)
    return [m for m in fake.messages.values() if m.channel_id == direct and has_picture(m)]


async def refusal_of(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_for_original(lambda m: not m.is_loading)


async def test_age_restricted_pictures_stay_out_of_direct_messages(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    async with start_easel() as bot:
        # Each delivery, copies by DM included, is over once its job id is here.
        delivered: asyncio.Queue[str] = asyncio.Queue()
        deliver = bot.results.deliver

        async def recording_deliver(job: FinishedJob) -> int | None:
            message_id = await deliver(job)
            delivered.put_nowait(job.job_id)
            return message_id

        bot.queue.set_sink(type("Recording", (), {"deliver": staticmethod(recording_deliver)})())
        plain = await imagine(fake, "a plain barn")
        # Over before results go by DM: its copy would be asked for once it is posted.
        assert await asyncio.wait_for(delivered.get(), RENDER_TIMEOUT_S) == job_id_of(plain)
        await reply_to(fake, "settings", {"results_by_dm": True})

        # Results by DM: the result is posted where it was made, and no copy goes to the DM.
        made = await fake.invoke_command(
            "imagine", {"prompt": "an adult barn", **QUICK}, channel=adults
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert result.channel_id == adults and not result.is_ephemeral
        assert await asyncio.wait_for(delivered.get(), RENDER_TIMEOUT_S) == job_id_of(result)
        assert direct_pictures(fake) == []

        # DM me: one private sentence, nothing sent.
        refusal = await refusal_of(await fake.click(result, label="DM me"))
        assert refusal.is_ephemeral and refusal.content == AGE_RESTRICTED_STAYS_IN_THE_SERVER

        # Shown privately it keeps the age restriction too: not in an ordinary channel.
        await reply_to(fake, "settings", {"private_results": True})
        shown_plainly = await fake.invoke_command("show", {"job_id": job_id_of(result)})
        refusal = await refusal_of(shown_plainly)
        assert refusal.is_ephemeral and AGE_RESTRICTED_PICTURE in refusal.content
        assert not has_picture(refusal)

        # A picture made in an ordinary channel before the server turned age_restricted_only
        # on stays in the server from then on, and the refusal says why.
        assert job_id_of(plain) != job_id_of(result)
        policy = {"policy": "age_restricted_only"}
        await reply_to(fake, "easel-admin nsfw", policy, user=fake.owner_id)
        refusal = await refusal_of(await fake.click(plain, label="DM me"))
        assert refusal.is_ephemeral
        assert "this server keeps its pictures in age-restricted channels" in refusal.content
        assert direct_pictures(fake) == []

        # A private result whose token expired: not sent by DM, logged without the member;
        # the member is told by DM, in words only, and /show brings it back privately in an
        # age-restricted channel of the server.
        caplog.set_level(logging.WARNING, logger="cogs.results.posting")
        posted = await deliver_after_token_expiry(fake, bot, "a secret adult barn", adults)
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is None
        assert direct_pictures(fake) == []
        assert not any("secret" in m.content for m in fake.messages.values() if not m.is_ephemeral)
        [kept] = [r.getMessage() for r in caplog.records if "direct messages" in r.getMessage()]
        assert str(fake.user_id) not in kept and "secret" not in kept
        assert "age-restricted channel of the server" in kept
        history = await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)
        newest = history.lines[0].job_id
        assert newest in kept
        direct = fake.dm_channel_of(fake.user_id)
        [notice] = [m for m in fake.messages.values() if m.channel_id == direct]
        server = bot.get_guild(fake.guild_id)
        assert server is not None and server.name in notice.content
        assert f"`/show {newest}` in an age-restricted channel of the server" in notice.content
        assert not notice.attachments and not notice.payload.get("embeds")
        show = await fake.invoke_command("show", {"job_id": newest}, channel=adults)
        shown = await show.wait_for_original(has_picture)
        assert shown.is_ephemeral


async def test_a_picture_stays_age_restricted_once_its_channel_is_not(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The age restriction was read when a picture was used, from its channel's flag of now:
    a moderator turning the flag off freed that channel's past pictures for DM me, /show in any
    channel and their buttons. It is journaled with the job when it is made."""
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    async with start_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "an adult barn", **QUICK}, channel=adults
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        fake.set_nsfw(adults, False)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change

        # Its own channel is an ordinary one now: its buttons are refused there as anywhere
        # else outside age-restricted channels, DM me included (the copies' own rule, which
        # the journaled flag feeds too: tests/unit/test_age_restricted_direct_messages.py).
        for label in ("DM me", "Remix"):
            refusal = await refusal_of(await fake.click(result, label=label))
            assert refusal.is_ephemeral and AGE_RESTRICTED_PICTURE in refusal.content, label
        shown = await refusal_of(await fake.invoke_command("show", {"job_id": job_id_of(result)}))
        assert AGE_RESTRICTED_PICTURE in shown.content and not has_picture(shown)
    assert direct_pictures(fake) == []
