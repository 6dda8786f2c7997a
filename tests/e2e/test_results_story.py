"""Results keep their story: when Discord serves a result re-encoded without its PNG text, the
job journal still answers /info and the message menus; buttons on results made by buttons
keep working after a restart."""

from __future__ import annotations

import aiohttp

from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    reply_to,
)
from tests.e2e.test_everyday_buttons import params_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.rest import webp_without_text

OTHER = 5454


async def test_info_and_the_menus_read_the_journal_when_the_text_was_stripped(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    async with start_easel():
        result = await imagine(fake_discord, "a paper lantern", seed=5)
        fake_discord.reencode_pictures_on_download()
        async with aiohttp.ClientSession() as http, http.get(result.attachments[0].url) as served:
            assert (await served.read())[:4] == b"RIFF"  # WebP: no PNG text left to read

        info = await fake_discord.invoke_message_command("Info", result)
        shown = await info.wait_for_original(lambda m: bool(m.content))
        assert "**Prompt:** a paper lantern" in shown.content and "**Seed:** 5" in shown.content

        # The Vary and Use settings menus read the prompt the same way (else: "no prompt").
        for menu in ("Vary", "Use settings"):
            made = await (
                await fake_discord.invoke_message_command(menu, result)
            ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            assert params_of(made)[0] == "a paper lantern", menu

        # A stripped copy uploaded to /info: the member's own job is remembered, nobody
        # else learns another member's prompt from a file name.
        stripped = (f"easel-{job_id_of(result)}.png", webp_without_text(result.attachments[0].data))
        own = await reply_to(fake_discord, "info", attachments={"image": stripped})
        assert "**Prompt:** a paper lantern" in own.content
        other = await reply_to(fake_discord, "info", attachments={"image": stripped}, user=OTHER)
        assert "carries no generation parameters" in other.content


async def test_buttons_on_results_made_by_buttons_work_after_a_restart(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        grid = await imagine(fake_discord, "two foxes", count=2, steps=4)
        picked = await (await fake_discord.click(grid, label="U2")).wait_for_original(has_picture)
        varied = await (await fake_discord.click(picked, label="Vary (Subtle)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )

    async with start_easel():  # a restart: only the journal and the custom_ids remain
        again = await (await fake_discord.click(varied, label="Vary (Strong)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        upscaled = await (await fake_discord.click(picked, label="Upscale (2x)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
    assert params_of(again)[0] == "two foxes"
    assert params_of(upscaled)[0] == "two foxes"
    assert job_id_of(again) != job_id_of(varied)
