"""/history's ◀ ▶ keep working after a restart (they are read from their custom_id, not kept
in memory for 10 minutes), and a page shows only its clicker's own jobs."""

from __future__ import annotations

from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    reply_to,
)
from tests.fake_discord import FakeDiscord
from tests.support.chunky_files import plain_png


async def test_history_pages_turn_after_a_restart_and_only_for_their_clicker(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        oldest = await imagine(fake_discord, "a cat number 0", seed=0)
        for number in range(1, 6):
            await imagine(fake_discord, f"a cat number {number}", seed=number)
        first_page = await reply_to(fake_discord, "history", {"search": "cat"})
        assert "page 1/2 (6 in all), matching 'cat'" in first_page.content
    async with start_easel():  # a restart
        turned = await fake_discord.click(first_page, label="Next ▶")
        second_page = await turned.wait_for_original(lambda m: "page 2/2" in m.content)
        assert "matching 'cat'" in second_page.content
        assert job_id_of(oldest) in second_page.content
        # Another member's click (were the reply not ephemeral) shows their own jobs: none.
        others = await fake_discord.click(
            second_page, label="◀ Previous", user=fake_discord.owner_id
        )
        theirs = await others.wait_for_original(lambda m: "None of your jobs" in m.content)
        assert job_id_of(oldest) not in theirs.content


async def test_history_counts_in_words_and_names_a_promptless_job(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Counts read "1 image", "2 images", not "image(s)"; an /upscale of an upload, which has
    no prompt, says so instead of ending its line on a bare dash."""
    async with start_easel():
        one = await imagine(fake_discord, "a lone cat")
        two = await imagine(fake_discord, "two cats", count=2)
        upscaling = await fake_discord.invoke_command(
            "upscale", {"upscaler": "lanczos"}, attachments={"image": ("fox.png", plain_png())}
        )
        upscaled = await upscaling.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        listed = (await reply_to(fake_discord, "history")).content
        lines = {line.split("`")[1]: line for line in listed.splitlines()[1:-1]}
        assert lines[job_id_of(one)].endswith(" done, 1 image — a lone cat")
        assert lines[job_id_of(two)].endswith(" done, 2 images — two cats")
        assert lines[job_id_of(upscaled)].endswith(" done, 1 image — (no prompt)")
        assert "(s)" not in listed
