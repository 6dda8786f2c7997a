"""Holes found by the trust audit of Discord paths, held shut through the fake Discord: every
button that reads a job checks who may see it (not only the ones that render its picture);
every ``--repeat`` job's prompt meets the server's banned words, not only the first; a
picture of an age-restricted channel is not shown again, varied or used outside those
channels (/show, a link, copied buttons), and /show follows the server's channel list; a
limit of 0 stops free --relax jobs too."""

from __future__ import annotations

from bot.policy.moderation import AGE_RESTRICTED_PICTURE
from bot.policy.visibility import NOT_YOURS_TO_CLICK
from bot.settings import Settings
from db import refusals
from db.database import connect
from inference.infotext import infotext_from_png
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    images_today,
    imagine,
    job_id_of,
    limit_daily_images,
    reply_to,
)
from tests.e2e.test_prompt_safety import write_wildcard
from tests.fake_discord import FakeDiscord, StoredMessage

OTHER = 5353
HIDDEN = "no longer in the history"
INTERACTION_RESPONSE_MESSAGE = 4  # answered with a message: no modal, no deferred job


def words_button_of(job_id: str) -> list[dict[str, object]]:
    """The "Describe it in words" button Vary (Region) offers, as Easel writes it."""
    button = {
        "type": 2,
        "style": 1,
        "label": "Describe it in words",
        "custom_id": f"easel:region-words:{job_id}:0",
    }
    return [{"type": 1, "components": [button]}]


def custom_id_starting(message: StoredMessage, prefix: str) -> str:
    return next(c for c in message.custom_ids if c.startswith(prefix))


async def test_every_button_of_a_copied_result_checks_who_may_see_the_job(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    mods = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])
    async with start_easel() as bot:
        made_in_mods = await fake.invoke_command(
            "imagine",
            {"prompt": "the moderators' lighthouse", "count": 2, **QUICK},
            user=fake.owner_id,
            channel=mods,
        )
        grid = await made_in_mods.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await reply_to(fake, "settings", {"private_results": True})
        private = await imagine(fake, "my secret lighthouse")
        assert private.is_ephemeral
        private_job = private.custom_ids[0].split(":")[2]

        # Copies of those results' buttons where OTHER can click them: U1, 🔄, Remix,
        # Vary (Region) and its words button each answer with a refusal, not a job or a form.
        clicks = [
            (grid.components, custom_id_starting(grid, "easel:pick:"), NOT_YOURS_TO_CLICK),
            (grid.components, custom_id_starting(grid, "easel:reroll:"), NOT_YOURS_TO_CLICK),
            (grid.components, custom_id_starting(grid, "easel:remix:"), NOT_YOURS_TO_CLICK),
            (private.components, custom_id_starting(private, "easel:reroll:"), HIDDEN),
            (private.components, custom_id_starting(private, "easel:remix:"), HIDDEN),
            (private.components, custom_id_starting(private, "easel:region:"), HIDDEN),
            (words_button_of(private_job), f"easel:region-words:{private_job}:0", HIDDEN),
        ]
        for components, custom_id, refusal in clicks:
            copy = await fake.post_user_message("a copy", user=fake.bot_user_id)
            copy.payload["components"] = components
            click = await fake.click(copy, custom_id, user=OTHER)
            await click.wait_for_ack()
            assert click.response_type == INTERACTION_RESPONSE_MESSAGE, (custom_id, click)
            refused = await click.wait_for_original()
            assert refused.is_ephemeral and refusal in refused.content, (custom_id, refused)
            assert "lighthouse" not in refused.content
        assert await images_today(bot.services, OTHER, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0


async def test_every_seed_that_renders_meets_the_servers_banned_words(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    """A wildcard draws by seed: the seeds of --repeat's later jobs and of /compare's seed
    axis are planned too, not only the first picture's."""
    fake = fake_discord
    # From this file seeds 5, 11 and 12 draw "dog"; 6 (the second job of --repeat 2 from
    # seed 5) and 14 draw "cat".
    write_wildcard(easel_settings_for_test, "animal", "dog\ncat")
    async with start_easel() as bot:
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "cat"}, user=fake.owner_id
        )
        alone = await reply_to(fake, "imagine", {"prompt": "a __animal__", "seed": 6, **QUICK})
        assert alone.is_ephemeral and "The word 'cat' is banned" in alone.content
        compare = {"prompt": "a __animal__", "seed": 11, "x": "seed", "x_values": "11,14"}
        refused = await reply_to(fake, "compare", {**compare, **QUICK})
        assert refused.is_ephemeral and "The word 'cat' is banned" in refused.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0
        # --repeat: the first job (seed 5, a dog) is acknowledged and renders; its repeat is
        # planned after that, at seed 6 (a cat), and refused privately, never queued.
        repeated = await fake.invoke_command(
            "imagine", {"prompt": "a __animal__ --repeat 2", "seed": 5, **QUICK}
        )
        repeat_refused = await repeated.wait_for_followup(lambda m: "Repeat 2 of 2" in m.content)
        assert repeat_refused.is_ephemeral
        assert "The word 'cat' is banned" in repeat_refused.content
        dog = await repeated.wait_for_original(has_picture, RENDER_TIMEOUT_S)
        assert "a dog" in (infotext_from_png(dog.attachments[0].data) or "")
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        assert sum(has_picture(message) for message in fake.messages.values()) == 1


async def test_a_refused_repeat_names_and_records_the_repeats_it_ends(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    """A --repeat's later job refused by the server's gate (a banned word drawn at its seed)
    ends the repeats after it too: the one sentence the member is told names them all, and
    the server's dashboard keeps that sentence, as it keeps a first job's refusal."""
    fake = fake_discord
    write_wildcard(easel_settings_for_test, "animal", "dog\ncat")  # seed 5: dog; seed 6: cat
    async with start_easel() as bot:
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "cat"}, user=fake.owner_id
        )
        repeated = await fake.invoke_command(
            "imagine", {"prompt": "a __animal__ --repeat 3", "seed": 5, **QUICK}
        )
        refused = await repeated.wait_for_followup(lambda m: "Repeat 2 of 3" in m.content)
        assert refused.is_ephemeral
        assert "The word 'cat' is banned" in refused.content
        assert refused.content.endswith(" Not queued either: repeat 3."), refused.content
        await repeated.wait_for_original(has_picture, RENDER_TIMEOUT_S)
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        assert bot.queue.queued_count() == 0
        conn = await connect(bot.settings.database_path)
        try:
            kept = await refusals.latest(conn, fake.guild_id, 10)
        finally:
            await conn.close()
    [repeat_refused] = [r for r in kept if r.reason == "banned_word" and r.user_id == fake.user_id]
    assert repeat_refused.sentence == refused.content


async def test_pictures_of_an_age_restricted_channel_stay_in_those(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    async with start_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "a moonlit bath", **QUICK}, channel=adults
        )
        result = await made.wait_for_original(has_picture, RENDER_TIMEOUT_S)
        general_job = job_id_of(await imagine(fake, "a sunny meadow"))
        posted = len(fake.messages)

        # Into an ordinary channel: /show, /vary by link and a copy of its buttons are refused.
        refusals = [
            await reply_to(fake, "show", {"job_id": job_id_of(result)}),
            await reply_to(fake, "vary", {"message": result.jump_url}),
        ]
        copy = await fake.post_user_message("a copy", user=fake.bot_user_id)
        copy.payload["components"] = result.components
        click = await fake.click(copy, label="Vary (Subtle)")
        refusals.append(await click.wait_for_original(lambda m: not m.is_loading))
        for refused in refusals:
            assert refused.is_ephemeral and AGE_RESTRICTED_PICTURE in refused.content
        assert len(fake.messages) == posted + len(refusals) + 1  # and the copy
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 2

        # In an age-restricted channel the same picture is shown again and varied.
        shown = await fake.invoke_command("show", {"job_id": job_id_of(result)}, channel=adults)
        assert not (await shown.wait_for_original(has_picture)).is_ephemeral
        varied = await fake.invoke_command("vary", {"message": result.jump_url}, channel=adults)
        await varied.wait_for_original(has_picture, RENDER_TIMEOUT_S)

        # Where the server's admins enabled Easel in one channel only, /show works only there.
        await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": adults}, user=fake.owner_id
        )
        refused = await reply_to(fake, "show", {"job_id": general_job})
        assert refused.is_ephemeral and "Easel is not enabled in this channel" in refused.content


async def test_a_member_stopped_by_a_zero_limit_cannot_render_with_relax(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """--relax is free, so it used to fit a limit of 0: the admins' way to stop a member."""
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 0)
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a fox --relax", **QUICK})
        assert refused.is_ephemeral
        assert "allowed no images per day here, --relax jobs included" in refused.content
        assert bot.queue.queued_count() == 0
        member, guild = fake_discord.user_id, fake_discord.guild_id
        assert not await bot.services.history.unfinished(member, guild_id=guild)
