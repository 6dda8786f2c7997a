"""/history's ◀ ▶ keep working after a restart (they are read from their custom_id, not kept
in memory for 10 minutes), and a page shows only its clicker's own jobs."""

from __future__ import annotations

from tests.e2e.helpers import StartEasel, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord


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
        turned = await fake_discord.click(first_page, label="▶")
        second_page = await turned.wait_for_original(lambda m: "page 2/2" in m.content)
        assert "matching 'cat'" in second_page.content
        assert job_id_of(oldest) in second_page.content
        # Another member's click (were the reply not ephemeral) shows their own jobs: none.
        others = await fake_discord.click(second_page, label="◀", user=fake_discord.owner_id)
        theirs = await others.wait_for_original(lambda m: "None of your jobs" in m.content)
        assert job_id_of(oldest) not in theirs.content
