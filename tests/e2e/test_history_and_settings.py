"""/history, /show, /forget-me and /settings through the fake Discord."""

from __future__ import annotations

import asyncio

import pytest

from bot.settings import Settings
from db.database import connect
from db.history import count_rows_of_user
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    forget_me,
    has_picture,
    imagine,
    job_id_of,
    reply_to,
)
from tests.e2e.test_moderation_after_the_fact import WITHDRAWAL_WAIT_S, deletions_read
from tests.fake_discord import FakeDiscord
from tests.fake_discord.rest import RESPONSE_DEFERRED_MESSAGE


async def test_history_pages_search_show_and_forget_me(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    easel_settings_for_test: Settings,
) -> None:
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        results = [await imagine(fake_discord, f"a cat number {i}", seed=i) for i in range(5)]
        dog = await imagine(fake_discord, "a lonely DOG", seed=77)
        other = await imagine(fake_discord, "someone else's cat", user=fake_discord.owner_id)

        first_page = await reply_to(fake_discord, "history")
        assert first_page.is_ephemeral
        assert "page 1/2 (6 in all)" in first_page.content
        assert job_id_of(dog) in first_page.content  # newest first
        assert job_id_of(other) not in first_page.content
        click = await fake_discord.click(first_page, label="Next ▶")
        second_page = await click.wait_for_original(lambda m: "page 2/2" in m.content)
        assert job_id_of(results[0]) in second_page.content

        found = await reply_to(fake_discord, "history", {"search": "dog"})
        assert "(1 in all)" in found.content and job_id_of(dog) in found.content
        nothing = await reply_to(fake_discord, "history", {"search": "zebra"})
        assert "None of your jobs mention 'zebra'" in nothing.content

        show = await fake_discord.invoke_command("show", {"job_id": job_id_of(dog)})
        shown = await show.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(shown.attachments[0].data)
        assert infotext is not None and parse_infotext(infotext)[2]["Seed"] == 77
        assert any(c.startswith("easel:upscale:") for c in shown.custom_ids)
        not_mine = await reply_to(fake_discord, "show", {"job_id": job_id_of(other)})
        assert not_mine.is_ephemeral and "You have no job" in not_mine.content

        await reply_to(fake_discord, "settings", {"steps": 9})
        await fake_discord.delete_messages(results[0])  # a moderator's, before the erase
        async with asyncio.timeout(WITHDRAWAL_WAIT_S):
            assert await deletions.get() == [job_id_of(results[0])]
        user_id = fake_discord.user_id
        images_dir = bot.settings.images_dir
        assert (images_dir / job_id_of(dog)).is_dir()
        forget = await forget_me(fake_discord)
        forgotten = await forget.wait_for_original(lambda m: not m.is_loading)
        # Deferred first (the erase may take past Discord's 3 s), answered privately after.
        assert forget.response_type == RESPONSE_DEFERRED_MESSAGE and forgotten.is_ephemeral
        assert "erased 6 jobs, 6 stored pictures" in forgotten.content
        # Every post of the member's jobs still there: results and the /show re-post, after
        # the answer (the one a moderator deleted was unlinked by its deletion).
        assert "Removing 6 posted messages from channels" in forgotten.content
        assert "Copies sent to you by direct message stay" in forgotten.content
        # All of today: its quota use keeps the id until the periods end, and no "too" points
        # at an older use there is none of.
        assert "older quota use" not in forgotten.content
        assert "then loses it. " in forgotten.content
        posts = [*results, dog, shown]
        async with asyncio.timeout(WITHDRAWAL_WAIT_S):  # the others' deletions withdraw nothing
            assert [await deletions.get() for _ in posts[1:]] == [[]] * len(posts[1:])
        assert all(post.deleted for post in posts) and not other.deleted
        deletes = fake_discord.calls_to("DELETE", "/channels/{channel}/messages/{message}")
        assert sorted(call.path.rsplit("/", 1)[1] for call in deletes) == sorted(
            str(post.id) for post in posts[1:]
        )  # one each, not the one a moderator deleted (no 404 asked for), and nobody else's
        # Once the deletes end, the member's answer says how they went.
        told = await forget.wait_for_original(lambda m: "Removed" in m.content)
        assert "Removed 6 of 6 posted messages from channels." in told.content
        others_job = await bot.services.history.job(job_id_of(other))
        assert others_job is not None and not others_job.withdrawn
        assert await rows_of(easel_settings_for_test, user_id) == 0
        assert not (images_dir / job_id_of(dog)).exists()
        assert (images_dir / job_id_of(other)).is_dir()  # nobody else's pictures go
        assert await rows_of(easel_settings_for_test, fake_discord.owner_id) > 0
        gone = await (await fake_discord.click(dog, label="Upscale (2x)")).wait_for_original()
        assert gone.is_ephemeral and "no longer in the history" in gone.content
        empty = await reply_to(fake_discord, "history")
        assert "You have no jobs yet" in empty.content
        # The erase grows with the member's jobs: once per cooldown, refused with when again.
        again = await (await forget_me(fake_discord)).wait_for_answer()
        assert again.is_ephemeral and "can run it again <t:" in again.content
        assert "erased" not in again.content
        settings = await reply_to(fake_discord, "settings")
        assert "steps: Easel's default" in settings.content


async def test_settings_are_used_when_options_are_absent(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        saved = await reply_to(
            fake_discord,
            "settings",
            {"steps": 3, "cfg": 4.5, "negative": "blurry", "size": "64x64"},
        )
        assert saved.is_ephemeral and "steps: `3`" in saved.content
        bad = await reply_to(fake_discord, "settings", {"size": "13x7"})
        assert bad.is_ephemeral and "Size '13x7'" in bad.content

        handle = await fake_discord.invoke_command("imagine", {"prompt": "a fox", "seed": 5})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        _, negative, params = parse_infotext(infotext)
        assert negative == "blurry"
        assert params["Steps"] == 3 and params["CFG scale"] == 4.5 and params["Size"] == "64x64"

        explicit = await fake_discord.invoke_command(
            "imagine", {"prompt": "a fox", "seed": 5, "steps": 2}
        )
        result = await explicit.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and parse_infotext(infotext)[2]["Steps"] == 2

        await reply_to(fake_discord, "settings", {"private_results": True})
        private = await fake_discord.invoke_command("imagine", {"prompt": "a secret fox"})
        result = await private.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert result.is_ephemeral


async def rows_of(settings: Settings, user_id: int) -> int:
    """The member's rows left in the bot's database (jobs, pictures, settings...)."""
    conn = await connect(settings.database_path)
    try:
        return await count_rows_of_user(conn, user_id)
    finally:
        await conn.close()
