"""A job's progress previews follow the rules of now, through the fake Discord: a server that
spoilers its pictures while a job renders gets its next previews spoilered, and a maker who
turns private results on gets none shown in the channel from then on, even once they turn
them off again (the job became private), and even when both came between two edits."""

from __future__ import annotations

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, reply_to
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.support.engines import InstantEngine

_ORIGINAL_EDIT = "/webhooks/{app}/{token}/messages/{message}"


def _previews(message: StoredMessage) -> list[str]:
    return [attachment.filename for attachment in message.attachments]


async def none_shown_three_edits_on(fake: FakeDiscord, job: InteractionHandle) -> None:
    """Three progress edits of ``job``'s response later, it shows no preview still."""
    edits = len(fake.calls_to("PATCH", _ORIGINAL_EDIT))
    await job.wait_for_original(
        lambda _m: len(fake.calls_to("PATCH", _ORIGINAL_EDIT)) >= edits + 3,
        timeout=RENDER_TIMEOUT_S,
    )
    assert job.original is not None and not _previews(job.original)


async def test_previews_follow_the_spoiler_policy_and_private_results_of_now(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    # A preview each step, for a minute at most (the job is cancelled as soon as it is seen).
    engine = InstantEngine(seconds=60.0, preview=b"\xff\xd8 a preview")
    async with start_easel(lambda _device: engine):
        job = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 150, "size": "64x64"}
        )
        rendering = await job.wait_for_original(
            lambda m: "Rendering" in m.content and _previews(m) == ["preview.jpg"],
            timeout=RENDER_TIMEOUT_S,
        )
        assert not rendering.is_ephemeral
        await reply_to(
            fake_discord, "easel-admin nsfw", {"policy": "spoiler"}, user=fake_discord.owner_id
        )
        await job.wait_for_original(lambda m: _previews(m) == ["SPOILER_preview.jpg"])
        await reply_to(fake_discord, "settings", {"private_results": True})
        hidden = await job.wait_for_original(
            lambda m: "Rendering" in m.content and not _previews(m)
        )
        # Turned off again: the job stays private (its result goes to its maker alone), and so
        # do its previews: three edits later, still none shown.
        await reply_to(fake_discord, "settings", {"private_results": False})
        await none_shown_three_edits_on(fake_discord, job)
        await (await fake_discord.click(hidden, hidden.custom_ids[0])).wait_for_original()
        assert engine.batches == []  # cancelled before it ended


async def test_previews_stay_hidden_after_private_results_go_on_and_off_between_two_edits(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Private results turned on and off again before the next progress edit reads the setting
    (F7A review): the save made the job private, and its previews follow the job's privacy."""
    engine = InstantEngine(seconds=60.0, preview=b"\xff\xd8 a preview")
    async with start_easel(lambda _device: engine) as bot:
        job = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 150, "size": "64x64"}
        )
        rendering = await job.wait_for_original(
            lambda m: "Rendering" in m.content and _previews(m) == ["preview.jpg"],
            timeout=RENDER_TIMEOUT_S,
        )
        members = bot.services.member_settings
        # Milliseconds apart, where the edits come PROGRESS_EDIT_INTERVAL_S apart: the next
        # edit reads the setting off (this run's /settings would be as quick, if less sure).
        await members.update(fake_discord.user_id, {"private_results": True})
        await members.update(fake_discord.user_id, {"private_results": False})
        await none_shown_three_edits_on(fake_discord, job)
        await (await fake_discord.click(rendering, rendering.custom_ids[0])).wait_for_original()
        assert engine.batches == []  # cancelled before it ended
