"""A moderator's withdrawal of a picture takes Easel's other copies of it down, through the
fake Discord with real tiny renders: its U1 and /show posts, a copy another member asked for by
DM, and a V1 made from it and a 🔄 of that V1 (withdrawn with it, their posts deleted; a 🔄 of
the same prompt is not made from the picture and stays); a delete Discord failed is tried
again; a /show recorded just after the withdrawal is deleted too; a copy by DM its member
deleted, or recorded before their /forget-me, is not deleted again. A moderator's Delete on a
later copy never reaches an older job with the same pixels, but names it to them: with a link
where they may delete it, else only that it is up elsewhere (one posted nowhere: not named);
the audit row names it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import bot.history
from bot.history import WITHDRAWAL_AUDITED_AS, StoredJob
from cogs.history import HistoryCog
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    forget_me,
    imagine,
    job_id_of,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS
from tests.support.pictures import has_picture

MAKER = 7101
OTHER = 7102
MODERATOR = 7103
CHANNEL_MODERATOR = 7104
MANAGE_MESSAGES = 1 << 13
DELETE_ROUTE = "/channels/{channel}/messages/{message}"
# Bounds a hang, never a speed (a loaded 2-core machine).
WAIT_S = 30.0
POLL_S = 0.05


def members(fake: FakeDiscord) -> None:
    fake.add_member(MAKER, "maker", roles=(fake.member_role_id,))
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    # Manage Messages through a role: in every channel, by Discord's reckoning and Easel's.
    moderators = fake.add_role("Moderators", DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    fake.add_member(MODERATOR, "moderator", roles=(moderators,))


async def until_all(check: Callable[[], bool], what: str) -> None:
    """Until ``check`` holds (polled: the deletes are the bot's own, in the background)."""
    for _ in range(int(WAIT_S / POLL_S)):
        if check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"after {WAIT_S} s, not yet: {what}")


def deletes_of(fake: FakeDiscord, message: StoredMessage) -> list[int]:
    """The statuses Discord answered the message's deletes with, in order."""
    calls = fake.calls_to("DELETE", DELETE_ROUTE)
    return [call.status for call in calls if call.path.endswith(f"/{message.id}")]


async def clicked(
    fake: FakeDiscord, message: StoredMessage, label: str, user: int
) -> StoredMessage:
    handle = await fake.click(message, label=label, user=user)
    return await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_a_withdrawn_grid_takes_its_posts_dm_copy_and_variation_down_not_its_reroll(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    members(fake)
    # A failed delete is due again at once (not in 15 minutes), at the sweep's next pass.
    monkeypatch.setattr(bot.history, "POST_DELETE_FIRST_WAIT_S", 0.0)
    async with start_easel() as easel:
        made = await fake.invoke_command(
            "imagine", {"prompt": "a vile thing", "count": 2, **QUICK}, user=MAKER
        )
        grid = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        job = job_id_of(grid)
        u1 = await clicked(fake, grid, "U1", MAKER)
        v1 = await clicked(fake, grid, "V1", MAKER)
        rerolled = await (
            await fake.click(grid, f"easel:reroll:{job}", user=MAKER)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # A 🔄 of V1 varies the grid's picture again (V1's request, a new seed): taken too.
        v1_again = await (
            await fake.click(v1, f"easel:reroll:{job_id_of(v1)}", user=MAKER)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        shown = await reply_to(fake, "show", {"job_id": job}, user=MAKER)
        assert has_picture(shown) and not shown.is_ephemeral
        asked = await fake.click(grid, label="DM me", user=OTHER)
        await asked.wait_for_original(
            lambda m: "Sent to your direct messages" in m.content, timeout=WAIT_S
        )
        dm = fake.dm_channel_of(OTHER)
        [dm_copy] = [m for m in fake.messages.values() if m.channel_id == dm and has_picture(m)]
        taken_down = [u1, shown, dm_copy, v1, v1_again]

        fake.fail("DELETE", DELETE_ROUTE, times=1, status=503)  # the first post's delete
        await fake.click(grid, label="Delete", user=MODERATOR)
        await until_all(
            lambda: all(deletes_of(fake, m) for m in taken_down),
            "the withdrawal's deletes",
        )
        failed = [m for m in taken_down if deletes_of(fake, m)[0] == 503]
        assert len(failed) == 1, [deletes_of(fake, m) for m in taken_down]
        # The next sweep (15 minutes apart; woken here) tries it again.
        cog = easel.get_cog("HistoryCog")
        assert isinstance(cog, HistoryCog)
        cog.delete_pending_now()
        await until_all(lambda: all(m.deleted for m in taken_down), "every copy deleted")
        assert deletes_of(fake, failed[0]) == [503, 204]
        assert grid.deleted and not rerolled.deleted

        history = easel.services.history
        variation, reroll = await history.job(job_id_of(v1)), await history.job(job_id_of(rerolled))
        assert variation is not None and variation.withdrawn
        assert reroll is not None and not reroll.withdrawn
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        assert f"<@{MODERATOR}> {WITHDRAWAL_AUDITED_AS}" in audit.content, audit.content
        assert "2 finished made from their pictures, 5 other posts deleted" in audit.content

        # Restored, the variation comes back with it; the deleted posts stay deleted.
        restored = await reply_to(fake, "easel-admin restore", {"job": job}, user=fake.owner_id)
        assert job_id_of(v1) in restored.content and "stay deleted" in restored.content
        assert job_id_of(v1_again) in restored.content
        variation = await history.job(job_id_of(v1))
        assert variation is not None and not variation.withdrawn
        assert all(m.deleted for m in taken_down)


async def test_a_moderators_delete_of_a_copy_names_the_older_original_still_up(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    second = fake.add_text_channel("second")
    fake.add_member(CHANNEL_MODERATOR, "second's moderator", roles=(fake.member_role_id,))
    fake.set_overwrite(second, CHANNEL_MODERATOR, allow=MANAGE_MESSAGES)
    async with start_easel() as easel:
        original = await imagine(fake, "a vile thing", user=MAKER, seed=5)
        # The same settings, so the same pixels: later jobs, in another channel and in this one.
        made_there = await fake.invoke_command(
            "imagine", {"prompt": "a vile thing", "seed": 5, **QUICK}, user=OTHER, channel=second
        )
        there = await made_there.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        again = await fake.invoke_message_command("Use settings", original, user=OTHER)
        copy = await again.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        for later in (there, copy):
            assert later.attachments[0].data == original.attachments[0].data
        first, second_job = job_id_of(original), job_id_of(there)

        # A moderator of both channels: each older one named, with a link to delete it too.
        deleting = await fake.click(copy, label="Delete", user=MODERATOR)
        told = await deleting.wait_for_followup(timeout=WAIT_S)
        links = [
            f"https://discord.com/channels/{fake.guild_id}/{message.channel_id}/{message.id}"
            for message in (original, there)
        ]
        assert told.is_ephemeral
        assert told.content.splitlines() == [
            f"An older job with these pixels is still up: `{job}` {link}"
            for job, link in zip((first, second_job), links, strict=True)
        ]
        assert copy.deleted and not original.deleted and not there.deleted
        # A moderator of the other channel alone: only that one is up elsewhere.
        deleting = await fake.click(there, label="Delete", user=CHANNEL_MODERATOR)
        told = await deleting.wait_for_followup(timeout=WAIT_S)
        assert told.is_ephemeral and first not in told.content
        assert told.content == (
            "An older copy of this picture is still up elsewhere in this server, where you "
            "lack Manage Messages."
        )
        assert there.deleted and not original.deleted
        stored = await easel.services.history.job(first)
        assert stored is not None and not stored.withdrawn
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        assert f"older jobs with their pixels still stand: {first}, {second_job}" in audit.content
        assert audit.content.count(f"older jobs with their pixels still stand: {first}") == 2


async def test_an_older_twin_posted_nowhere_is_not_said_to_be_up(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """An older twin private to its maker (posted nowhere) is not up anywhere: the moderator
    is told of the posted one alone (nor that a private one exists); the audit row names
    the posted one and counts the private one, never naming it (AUD21)."""
    fake = fake_discord
    members(fake)
    async with start_easel():
        await reply_to(fake, "settings", {"private_results": True}, user=MAKER)
        hidden = await imagine(fake, "a vile thing", user=MAKER, seed=5)
        assert hidden.is_ephemeral
        original = await imagine(fake, "a vile thing", user=OTHER, seed=5)
        copy = await imagine(fake, "a vile thing", user=OTHER, seed=5)
        for later in (original, copy):
            assert later.attachments[0].data == hidden.attachments[0].data
        deleting = await fake.click(copy, label="Delete", user=MODERATOR)
        told = await deleting.wait_for_followup(timeout=WAIT_S)
        link = f"https://discord.com/channels/{fake.guild_id}/{original.channel_id}/{original.id}"
        assert told.content == (
            f"An older job with these pixels is still up: `{job_id_of(original)}` {link}"
        )
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        older = f"older jobs with their pixels still stand: {job_id_of(original)}"
        assert f"{older} and 1 private job (not named)" in audit.content, audit.content
        assert job_id_of(hidden) not in audit.content


async def test_a_show_recorded_just_after_its_withdrawal_is_deleted(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /show racing the moderator's Delete: past its checks, posted, but recorded after the
    withdrawal took the job's posts. Its own record finds the job withdrawn and deletes it
    (the sweep, not woken here, would otherwise have nothing of it to delete)."""
    fake = fake_discord
    members(fake)
    async with start_easel() as easel:
        grid = await imagine(fake, "a vile thing", user=MAKER)
        job = job_id_of(grid)
        history = easel.services.history
        monkeypatch.setattr(history, "posts_left_to_delete", lambda: None)
        record = history.posted_again

        async def withdrawn_first(
            stored: StoredJob, channel_id: int | None, message_id: int
        ) -> bool:
            # The moderator's Delete lands between the post and its record.
            await fake.click(grid, label="Delete", user=MODERATOR)
            for _ in range(int(WAIT_S / POLL_S)):
                withdrawn = await history.job(job)
                if withdrawn is not None and withdrawn.withdrawn:
                    break
                await asyncio.sleep(POLL_S)
            return await record(stored, channel_id, message_id)

        monkeypatch.setattr(history, "posted_again", withdrawn_first)
        shown = await reply_to(fake, "show", {"job_id": job}, user=MAKER)
        assert has_picture(shown) and not shown.is_ephemeral
        # Deleted through the interaction's webhook (its reply); asked once (a second delete
        # would be a violation at the fake's teardown).
        await until_all(lambda: shown.deleted and grid.deleted, "the /show post deleted")
        assert await history.posts_of(job) == ()
        assert await history.pending_post_deletes() == ()


async def test_copies_by_dm_deleted_or_forgotten_by_their_member_are_not_deleted_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A member who deleted their copy by DM (its Delete) has it deleted once; one whose
    /forget-me came after theirs keeps theirs, no longer recorded: the withdrawal deletes
    neither (only the job's /show post)."""
    fake = fake_discord
    members(fake)
    async with start_easel() as easel:
        grid = await imagine(fake, "a vile thing", user=MAKER)
        copies = []
        for member in (MAKER, OTHER):
            asked = await fake.click(grid, label="DM me", user=member)
            await asked.wait_for_original(
                lambda m: "Sent to your direct messages" in m.content, timeout=WAIT_S
            )
            dm = fake.dm_channel_of(member)
            [copy] = [m for m in fake.messages.values() if m.channel_id == dm and has_picture(m)]
            copies.append(copy)
        deleted_copy, forgotten_copy = copies
        await fake.click(deleted_copy, label="Delete", user=MAKER)
        await until_all(lambda: deleted_copy.deleted, "the maker's delete of their copy")
        forgotten = await (await forget_me(fake, user=OTHER)).wait_for_answer()
        assert forgotten.content.startswith("Done"), forgotten.content
        shown = await reply_to(fake, "show", {"job_id": job_id_of(grid)}, user=MAKER)

        await fake.click(grid, label="Delete", user=MODERATOR)
        await until_all(lambda: shown.deleted, "the /show post deleted")
        history = easel.services.history
        for _ in range(int(WAIT_S / POLL_S)):  # the sweep's pass ends with none left
            if not await history.pending_post_deletes():
                break
            await asyncio.sleep(POLL_S)
        assert await history.pending_post_deletes() == ()
        assert deletes_of(fake, deleted_copy) == deletes_of(fake, forgotten_copy) == []
        assert not forgotten_copy.deleted
