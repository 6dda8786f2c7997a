"""Remix, Delete, DM me and the "results by DM" setting, through the fake Discord."""

from __future__ import annotations

import asyncio

import pytest

import bot.images
from bot.jobs.queue import FinishedJob
from bot.policy.visibility import NOT_YOURS_TO_CLICK
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    forget_me,
    has_picture,
    images_today,
    imagine,
    job_id_of,
    modal_fields,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS

OTHER = 5252
MODERATOR = 5353
MANAGE_MESSAGES = 1 << 13
VIEW_CHANNEL = 1 << 10
READ_MESSAGE_HISTORY = 1 << 16


def params_of(message: StoredMessage) -> tuple[str, str, dict[str, object]]:
    infotext = infotext_from_png(message.attachments[0].data)
    assert infotext is not None
    return parse_infotext(infotext)


async def until_deleted(message: StoredMessage) -> None:
    for _ in range(200):  # 10 s
        if message.deleted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message.id} was not deleted")


def direct_messages(fake: FakeDiscord, user: int) -> list[StoredMessage]:
    channel = fake.dm_channel_of(user)
    return [m for m in fake.messages.values() if m.channel_id == channel and not m.deleted]


async def test_remix_renders_the_edited_job_for_the_member_who_submits_it(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    async with start_easel() as bot:
        original = await imagine(fake_discord, "a red barn", negative="fog", seed=77)

        opened = await fake_discord.click(original, label="Remix", user=OTHER)
        fields = modal_fields(await opened.wait_for_modal())
        values = {custom_id: value for custom_id, value in fields.values()}
        prompt_id, prompt = next(v for label, v in fields.items() if label.startswith("Prompt"))
        assert prompt == "a red barn"
        assert fields["Negative prompt"][1] == "fog"
        steps_id = fields["Steps, CFG scale"][0]

        # A bad field is one private sentence naming what is wrong with it (two numbers, but
        # steps are whole); nothing is queued or charged.
        bad = await fake_discord.submit_modal(opened, {**values, steps_id: "1.5, 7"}, user=OTHER)
        refusal = await bad.wait_for_original(lambda m: not m.is_loading)
        assert refusal.is_ephemeral
        assert refusal.content == "Steps must be a whole number between 1 and 150, got '1.5'."

        # The seed field kept: the same seed with the edited prompt.
        kept = await fake_discord.submit_modal(
            opened, {**values, prompt_id: "a blue barn --no snow"}, user=OTHER
        )
        remixed = await kept.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        prompt_read, negative, params = params_of(remixed)
        assert (prompt_read, negative, params["Seed"]) == ("a blue barn", "fog, snow", 77)
        assert params["Steps"] == 2 and params["Size"] == "64x64"
        assert f"<@{OTHER}>" in remixed.content

        # A modal is submitted once; a new one, with the seed field cleared: a new seed.
        reopened = await fake_discord.click(original, label="Remix", user=OTHER)
        refilled = modal_fields(await reopened.wait_for_modal())
        cleared = {
            custom_id: "" if label.startswith("Seed") else value
            for label, (custom_id, value) in refilled.items()
        }
        fresh = await fake_discord.submit_modal(reopened, cleared, user=OTHER)
        reseeded = await fresh.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert params_of(reseeded)[2]["Seed"] != 77

        guild = fake_discord.guild_id
        assert await images_today(bot.services, OTHER, guild) == 2
        assert await images_today(bot.services, fake_discord.user_id, guild) == 1


async def test_a_remix_form_is_checked_again_when_submitted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    club = fake.add_text_channel("club", visible_to=[OTHER])
    async with start_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "the club's barn", **QUICK}, user=fake.owner_id, channel=club
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # A copy of its buttons where everyone can click; OTHER, who sees the club, opens
        # two forms, then loses the club before submitting.
        copy = await fake.post_user_message("a copy", user=fake.bot_user_id)
        copy.payload["components"] = result.components
        remix = next(c for c in result.custom_ids if c.startswith("easel:remix:"))
        forms = [await fake.click(copy, remix, user=OTHER) for _ in range(2)]
        filled = [modal_fields(await form.wait_for_modal()) for form in forms]
        values = [{custom_id: value for custom_id, value in f.values()} for f in filled]

        fake.set_overwrite(club, OTHER, deny=VIEW_CHANNEL)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        lost = await fake.submit_modal(forms[0], values[0], user=OTHER)
        refusal = await lost.wait_for_original(lambda m: not m.is_loading)
        assert refusal.is_ephemeral and NOT_YOURS_TO_CLICK in refusal.content

        # The club again, but its maker has erased the job meanwhile.
        fake.set_overwrite(club, OTHER, allow=VIEW_CHANNEL | READ_MESSAGE_HISTORY)
        await (await forget_me(fake, user=fake.owner_id)).wait_for_answer()
        gone = await fake.submit_modal(forms[1], values[1], user=OTHER)
        refusal = await gone.wait_for_original(lambda m: not m.is_loading)
        assert refusal.is_ephemeral and "no longer in the history" in refusal.content
        assert "barn" not in refusal.content
        assert await images_today(bot.services, OTHER, fake.guild_id) == 0
        assert (await bot.services.history.page(OTHER, 0, guild_id=fake.guild_id)).total == 0


async def test_delete_is_for_the_owner_or_a_moderator_and_dm_me_sends_a_copy(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    fake_discord.add_member(
        MODERATOR, "mod", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES
    )
    async with start_easel() as bot:
        first = await imagine(fake_discord, "a lighthouse")
        refused = await fake_discord.click(first, label="Delete", user=OTHER)
        answer = await refused.wait_for_original(lambda m: "Manage Messages" in m.content)
        assert answer.is_ephemeral and not first.deleted

        await fake_discord.click(first, label="Delete", user=MODERATOR)
        await until_deleted(first)
        # A moderator's deletion withdraws the job: its pictures are not shown again. Once
        # Easel hears of it (the click's answer or the deletion's event), after the delete.
        for _ in range(600):  # 30 s: a loaded machine
            removed = await bot.services.history.job(job_id_of(first))
            if removed is not None and removed.withdrawn:
                break
            await asyncio.sleep(0.05)
        assert removed is not None and removed.withdrawn
        second = await imagine(fake_discord, "a windmill", count=2)

        # DM me: the clicker gets the pictures (with their infotext) and only a Delete button.
        asked = await fake_discord.click(second, label="DM me", user=OTHER)
        await asked.wait_for_original(lambda m: "Sent to your direct messages" in m.content)
        [copy] = direct_messages(fake_discord, OTHER)
        assert len(copy.attachments) == 2
        assert params_of(copy)[0] == "a windmill"
        assert len(copy.custom_ids) == 1 and copy.custom_ids[0].startswith("easel:delete:")
        await fake_discord.click(copy, label="Delete", user=OTHER)
        await until_deleted(copy)

        # Closed direct messages: one private sentence.
        fake_discord.revoke_send_messages(fake_discord.dm_channel_of(fake_discord.user_id))
        closed = await fake_discord.click(second, label="DM me")
        sentence = await closed.wait_for_original(lambda m: "cannot send you" in m.content)
        assert sentence.is_ephemeral

        await fake_discord.click(second, label="Delete")
        await until_deleted(second)
        # Its maker's own deletion withdraws nothing: /show brings it back.
        shown = await reply_to(fake_discord, "show", {"job_id": job_id_of(second)})
        assert has_picture(shown)


async def test_dm_me_under_one_picture_of_a_grid_names_that_picture_and_its_seed_alone(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The copy's text names the pictures it carries: one picture of a grid is that picture
    and its seed (as its U post and its PNG say), not every seed of the batch (AUD26 F2)."""
    async with start_easel():
        grid = await imagine(fake_discord, "two foxes", count=2, seed=100)
        job_id = job_id_of(grid)
        picked = await (await fake_discord.click(grid, label="U2")).wait_for_original(has_picture)
        asked = await fake_discord.click(picked, label="DM me")
        await asked.wait_for_original(lambda m: "Sent to your direct messages" in m.content)
        [one] = direct_messages(fake_discord, fake_discord.user_id)
        assert one.content.endswith(f"picture 2 of job `{job_id}` (seed 101)")
        assert params_of(one)[2]["Seed"] == 101 and len(one.attachments) == 1
        # The whole grid's copy still names each of its seeds.
        asked = await fake_discord.click(grid, label="DM me")
        await asked.wait_for_original(lambda m: "Sent to your direct messages" in m.content)
        [both] = [m for m in direct_messages(fake_discord, fake_discord.user_id) if m.id != one.id]
        assert both.content.endswith(f"job `{job_id}` (seed 100, 101)")
        assert len(both.attachments) == 2


async def test_results_by_dm_sends_each_result_to_the_member_too(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    grids_composed: list[bytes] = []

    def counted_grid(*args: object) -> bytes:
        grids_composed.append(png := original_grid(*args))  # type: ignore[arg-type]
        return png

    original_grid = bot.images.comparison_png
    monkeypatch.setattr(bot.images, "comparison_png", counted_grid)
    async with start_easel() as easel:
        delivered, deliver = asyncio.Event(), easel.results.deliver

        async def recorded(job: FinishedJob) -> int | None:
            try:
                return await deliver(job)
            finally:
                delivered.set()

        monkeypatch.setattr(easel.results, "deliver", recorded)
        await imagine(fake_discord, "a harbour at dusk")  # the setting is off by default
        # Over before results go by DM: its copy would be asked for once it is posted.
        await asyncio.wait_for(delivered.wait(), RENDER_TIMEOUT_S)
        saved = await reply_to(fake_discord, "settings", {"results_by_dm": True})
        assert "results by DM too: yes" in saved.content
        result = await imagine(fake_discord, "a harbour at dawn")
        direct = fake_discord.dm_channel_of(fake_discord.user_id)
        copy = await fake_discord.wait_for_channel_message(has_picture, channel=direct)
        assert copy.attachments[0].data == result.attachments[0].data
        assert all(c.startswith("easel:delete:") for c in copy.custom_ids)
        assert direct_messages(fake_discord, fake_discord.user_id) == [copy]

        # A comparison's copy is its labelled grid, one file: its cells can outnumber the
        # 10 files a message may carry.
        axes = {"x": "seed", "x_values": "1, 2", "y": "cfg", "y_values": "3, 9"}
        plot_handle = await fake_discord.invoke_command(
            "compare", {"prompt": "a harbour", **axes, **QUICK}
        )
        plot = await plot_handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        plot_copy = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and m.id != copy.id, channel=direct
        )
        assert [a.data for a in plot_copy.attachments] == [plot.attachments[0].data]
        assert len(grids_composed) == 1  # once for the posted grid and its copy both
