"""A job's progress previews follow the rules of now, through the fake Discord: a server that
spoilers its pictures while a job renders gets its next previews spoilered, and a maker who
turns private results on gets none shown in the channel from then on."""

from __future__ import annotations

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, reply_to
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.engines import InstantEngine


def _previews(message: StoredMessage) -> list[str]:
    return [attachment.filename for attachment in message.attachments]


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
        await (await fake_discord.click(hidden, hidden.custom_ids[0])).wait_for_original()
        assert engine.batches == []  # cancelled before it ended
