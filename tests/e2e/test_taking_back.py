"""Taking back an admin's or a member's mistake through the fake Discord: what each undo
restores, and what each answer says it cannot."""

from __future__ import annotations

import time
from typing import cast

import pytest

import cogs.history
from bot.app import EaselBot, build
from bot.history import WITHHELD_AUDITED_AS
from bot.policy.moderation import WITHHELD_IN_DIRECT_MESSAGES
from bot.settings import Settings
from cogs.history import ERASE_EVERYTHING
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    forget_me,
    imagine,
    job_id_of,
    reply_to,
)
from tests.e2e.test_moderation_commands import until
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_VIEW_AUDIT_LOG

MEMBER = 7301


async def test_a_quota_override_is_removed_and_an_empty_one_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake, owner = fake_discord, fake_discord.owner_id
    fake.add_member(MEMBER, "m", roles=(fake.member_role_id,))

    async def quota_of(member: int) -> str:
        return (await reply_to(fake, "quota", user=member)).content

    async def admin_quota(options: dict[str, object]) -> str:
        return (await reply_to(fake, "easel-admin quota", options, user=owner)).content

    async with start_easel():
        await admin_quota({"scope": "guild", "images_per_day": 2})
        mistake = await admin_quota({"scope": "user", "member": MEMBER, "images_per_day": 50})
        assert "change:reset removes this override" in mistake
        assert "0 of 50" in await quota_of(MEMBER)

        # Every limit left empty no longer means "unlimited" silently: it is refused, naming
        # the ways to say what was meant, and nothing changes.
        empty = await admin_quota({"scope": "user", "member": MEMBER})
        assert "change:reset to remove the override" in empty
        assert "the server's default limits (images per day: 2)" in empty
        assert "change:unlimited" in empty
        assert "0 of 50" in await quota_of(MEMBER)

        shown = (await reply_to(fake, "easel-admin show", user=owner)).content
        assert f"quota overrides: everyone: images per day: 2; <@{MEMBER}>: images per day: 50" in (
            shown
        )

        reset = await admin_quota({"scope": "user", "member": MEMBER, "change": "reset"})
        assert reset.startswith(f"Removed the quota override for <@{MEMBER}>")
        assert "the server's default limits (images per day: 2) apply" in reset
        assert "0 of 2" in await quota_of(MEMBER)

        # The server's own default goes back to Easel's built-in, and unlimited is asked for.
        server = await admin_quota({"scope": "guild", "change": "reset"})
        assert "Easel's built-in limits (images per day: 100) apply" in server
        assert "0 of 100" in await quota_of(MEMBER)
        lifted = await admin_quota({"scope": "user", "member": MEMBER, "change": "unlimited"})
        assert lifted.startswith(f"Quota for <@{MEMBER}>: unlimited")
        assert "no limits apply to you" in await quota_of(MEMBER)

        audit = (await reply_to(fake, "easel-admin audit", user=owner)).content
        assert f"quota for <@{MEMBER}>: override removed" in audit
        assert "quota for everyone: override removed" in audit


async def test_forget_me_asks_first_and_erases_only_on_the_press(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        [spec] = [c for c in fake.registered_commands(guild=True) if c["name"] == "forget-me"]
        assert "cannot be undone" in spec["description"]
        made = await imagine(fake, "my favourite cat")
        job = job_id_of(made)

        asked = await fake.invoke_command("forget-me")
        question = await asked.wait_for_answer()
        assert question.is_ephemeral
        assert "In every server and in DMs" in question.content
        assert "This cannot be undone. What stays (a record that you asked" in question.content
        assert question.component(label=ERASE_EVERYTHING)["style"] == 4  # danger: red
        # Asking erased nothing.
        assert job in (await reply_to(fake, "history")).content
        assert not fake.messages[made.id].deleted

        pressed = await fake.click(question, label=ERASE_EVERYTHING)
        done = await pressed.wait_for_original(lambda m: "Done: erased 1 job" in m.content)
        assert done.is_ephemeral
        asked_now = await asked.wait_for_original(lambda m: not m.custom_ids)
        assert "was pressed" in asked_now.content  # one press: its button is gone
        assert "You have no jobs yet" in (await reply_to(fake, "history")).content


async def test_a_forget_me_left_unconfirmed_expires_and_erases_nothing(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cogs.history, "FORGET_ME_CONFIRM_S", 0.5)
    fake = fake_discord
    async with start_easel():
        made = await imagine(fake, "my favourite cat")
        asked = await fake.invoke_command("forget-me")
        expired = await asked.wait_for_original(lambda m: "expired" in m.content, timeout=60)
        assert "nothing was erased" in expired.content and not expired.custom_ids
        assert job_id_of(made) in (await reply_to(fake, "history")).content
        # Once asked and confirmed, the erase runs as ever.
        erased = await (await forget_me(fake)).wait_for_answer()
        assert "Done: erased 1 job" in erased.content


async def test_a_forget_me_question_pressed_after_a_restart_is_answered_and_erases_nothing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        made = await imagine(fake, "my favourite cat")
        asked = await fake.invoke_command("forget-me")
        question = await asked.wait_for_answer()
    async with start_easel():  # the question's view is gone with the process that asked
        pressed = await fake.click(question, label=ERASE_EVERYTHING)
        await pressed.wait_for_ack()  # answered, never "This interaction failed"
        stale = await asked.wait_for_original(lambda m: not m.custom_ids)
        assert stale.content == cogs.history.FORGET_ME_NO_LONGER_OPEN
        assert "this press erased nothing" in stale.content
        assert job_id_of(made) in (await reply_to(fake, "history")).content


async def test_a_refused_forget_me_press_never_says_something_was_erased(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        await imagine(fake, "my favourite cat")
        erased = await (await forget_me(fake)).wait_for_answer()
        assert "Done: erased 1 job" in erased.content
        asked = await fake.invoke_command("forget-me")  # again, within the cooldown
        question = await asked.wait_for_answer()
        refused = await (await fake.click(question, label=ERASE_EVERYTHING)).wait_for_answer()
        assert "can be run once every 15 minutes" in refused.content
        told = await asked.wait_for_original(lambda m: not m.custom_ids)
        assert "refused, so nothing was erased" in told.content
        assert "says what was erased" not in told.content


async def test_the_first_allowed_channel_says_every_other_closes_and_what_ends(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    art = fake.add_text_channel("art")
    art_thread = fake.add_thread("sketches", parent=art)
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        # Queued in a thread of the channel to be listed: enabled with it, so not counted.
        for channel in (None, art_thread):
            handle = await fake.invoke_command(
                "imagine", {"prompt": "a cat", **QUICK}, channel=channel
            )
            await handle.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
        first = await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
        )
        assert "Easel now answers only in the listed channels" in first.content
        assert (
            "1 job queued or rendering now in a channel the list leaves out (or a thread of one) "
            "ends unposted and refunded (its maker is told): at once if rendering, else when it "
            "would start unless the list allows it again by then."
        ) in first.content
        gate.set()
        second = await reply_to(
            fake,
            "easel-admin channel",
            {"action": "add", "channel": fake.channel_id},
            user=fake.owner_id,
        )
        assert "answers only" not in second.content  # not the first: nothing more closes


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_a_result_withheld_by_a_mistaken_banned_word_is_in_the_audit_by_its_id(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    private: bool,
) -> None:
    fake, owner = fake_discord, fake_discord.owner_id
    async with start_easel() as bot:
        # A private one is named too (the audit is its server's admins' alone), never its
        # prompt: else no admin could restore it from the audit.
        await reply_to(fake, "settings", {"private_results": private})
        gate = calls_held(bot.results, "deliver", monkeypatch)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat on a mat", **QUICK})
        queued = await handle.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
        job = queued.custom_ids[0].rsplit(":", 1)[1]
        banned = {"action": "add", "word": "cat"}
        await reply_to(fake, "easel-admin banned-word", banned, user=owner)
        gate.set()

        async def withheld() -> bool:
            stored = await bot.services.history.job(job)
            return stored is not None and stored.withdrawn

        assert await until(withheld)
        await handle.wait_for_original(
            lambda m: not any("cancel" in c for c in m.custom_ids), timeout=RENDER_TIMEOUT_S
        )
        audit = (await reply_to(fake, "easel-admin audit", user=owner)).content
        assert WITHHELD_AUDITED_AS in audit
        assert job in audit
        assert "not named" not in audit and "cat on a mat" not in audit
        shown = (await reply_to(fake, "show", {"job_id": job})).content
        assert "unless a server admin restores it" in shown
        undone = {"action": "remove", "word": "cat"}
        await reply_to(fake, "easel-admin banned-word", undone, user=owner)
        restored = await reply_to(fake, "easel-admin restore", {"job": job}, user=owner)
        assert f"Restored job `{job}`: its pictures may be shown" in restored.content
        again = await fake.invoke_command("show", {"job_id": job})
        assert (await again.wait_for_answer()).attachments


async def test_one_mistaken_default_is_cleared_alone(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        await reply_to(fake, "settings", {"private_results": True, "cfg": 5.5})
        mistake = await reply_to(fake, "settings", {"steps": 150})
        assert "steps: `150`" in mistake.content
        cleared = (await reply_to(fake, "settings", {"clear": "steps"})).content
        assert "steps: Easel's default" in cleared
        assert "private results: yes" in cleared and "cfg: `5.5`" in cleared

        both = (await reply_to(fake, "settings", {"clear": "steps", "steps": 30})).content
        assert both.startswith("Both clear:steps and steps:30 change steps: pick one")
        assert "steps: Easel's default" in (await reply_to(fake, "settings")).content
        never_set = (await reply_to(fake, "settings", {"clear": "sampler"})).content
        assert never_set.startswith("sampler was not set (Easel's default already applied)")
        assert not never_set.startswith("Saved.")


async def test_a_job_ended_by_a_timeout_is_not_told_as_its_makers_own_cancel(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    fake.add_member(MEMBER, "innocent", roles=(fake.member_role_id,))
    fake.grant_permissions(fake.bot_user_id, PERMISSION_VIEW_AUDIT_LOG)
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)  # it stays queued
        options = {"prompt": "a quiet lake", **QUICK}
        handle = await fake.invoke_command("imagine", options, user=MEMBER)
        await handle.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
        await fake.time_out_member(MEMBER, time.time() + 600)
        gate.set()
        ended = await handle.wait_for_original(
            lambda m: not any("cancel" in c for c in m.custom_ids), timeout=RENDER_TIMEOUT_S
        )
        assert "Cancelled" not in ended.content
        assert "Stopped (job `" in ended.content
        assert "Easel stopped it because you were timed out in the server" in ended.content
        assert "you may submit it again" in ended.content


async def test_a_preset_saved_over_or_deleted_shows_what_went(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        first = {"name": "portrait", "steps": 40, "cfg": 5.5, "negative": "blurry, lowres"}
        saved = await reply_to(fake, "presets save", first)
        assert saved.content.startswith("Saved your preset **portrait**")
        again = (await reply_to(fake, "presets save", {"name": "portrait", "steps": 8})).content
        assert again.startswith("Replaced your preset **portrait** — steps: `8`")
        assert "It replaced your earlier one: **portrait** — steps: `40`, cfg: `5.5`" in again
        assert "blurry, lowres" in again
        deleted = (await reply_to(fake, "presets delete", {"name": "portrait"})).content
        assert deleted == "Deleted your preset **portrait** — steps: `8`"


async def rendered_unposted(
    fake: FakeDiscord, bot: EaselBot, prompt: str, **where: int
) -> tuple[InteractionHandle, str]:
    """A quick /imagine of ``prompt`` (``where``: its ``user``, ``channel``) rendered while the
    bot's posts are held (``calls_held`` on its ``deliver``): its handle and job id, once the
    journal says it is done."""
    handle = await fake.invoke_command("imagine", {"prompt": prompt, **QUICK}, **where)
    queued = await handle.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
    job_id = queued.custom_ids[0].rsplit(":", 1)[1]

    async def rendered() -> bool:
        stored = await bot.services.history.job(job_id)
        return stored is not None and stored.status == "done"

    assert await until(rendered)
    return handle, job_id


async def test_a_result_withheld_in_direct_messages_names_no_server_admin(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct messages follow the operator's rules, and no server admin can restore a job
    made there: /show says it is gone for good, not "unless a server admin restores it"."""
    fake = fake_discord
    dm = fake.dm_channel_of(fake.user_id)
    # Registered globally: commands synced to one server would exist there only.
    settings = easel_settings_for_test.model_copy(update={"allow_dms": True, "dev_guild_id": None})
    async with running_bot(fake, build(settings)) as client:
        bot = cast(EaselBot, client)
        calls_held(bot.results, "deliver", monkeypatch)  # rendered, then Easel stops
        _, job = await rendered_unposted(fake, bot, "a cat on a mat", channel=dm)
    monkeypatch.undo()
    # The operator bans a word before the next start, which delivers the result: withheld.
    banned = settings.model_copy(update={"operator_banned_words": frozenset({"cat"})})
    async with running_bot(fake, build(banned)) as client:
        bot = cast(EaselBot, client)

        async def withheld() -> bool:
            stored = await bot.services.history.job(job)
            return stored is not None and stored.withdrawn

        assert await until(withheld)
        shown = await reply_to(fake, "show", {"job_id": job}, channel=dm)
        assert shown.content == WITHHELD_IN_DIRECT_MESSAGES, shown.content
        assert "admin" not in shown.content
