"""Two hands on one job at once, through the fake Discord (review AUD37): another member's 🔄 or
Vary while the job's maker erases it (/forget-me) or retention prunes it; two moderators'
Delete on one post; its maker's Delete and a moderator's together; an admin's restore while
the maker erases the job or another admin restores it. One side is held at a seam until the
other has acted; each answer is the truth of that moment, and the audit names who acted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import bot.history as bot_history
import cogs.common as common
import cogs.results.buttons as buttons
import cogs.withdrawals as withdrawals
import db.history as store
from bot.app import EaselBot
from bot.history import MODERATOR_WITHDRAWAL_AUDITED_AS, WITHDRAWAL_AUDITED_AS
from tests.conftest import ErrorLogs
from tests.e2e.helpers import StartEasel, forget_me, images_today, imagine, job_id_of, reply_to
from tests.e2e.test_moderation_commands import (
    MANAGE_MESSAGES,
    MOD,
    OTHER,
    RAIDER,
    WAIT_S,
    audit_of,
    members,
    until,
    withdrawn,
)
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS

MOD_B = 7199
RESPONSE_ROUTE = "/webhooks/{app}/{token}/messages/{message}"  # a click's own delete
REFUSED = 403  # an error discord.py does not try again


def gone(job_id: str) -> str:
    return f"Job `{job_id}` is no longer in the history; make a new picture with /imagine."


async def test_a_click_on_a_job_erased_meanwhile_is_told_it_is_gone(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admitted and acknowledged, each click waits on Discord for its parent's posts; its
    parent is erased meanwhile, by its maker's /forget-me or by retention. Refused in the
    words of a click on a job that is gone, nothing journaled or charged (it was a foreign
    key failure, told as Easel's own error)."""
    fake = fake_discord
    members(fake)
    real = common._check_parent_posts_there
    erased = asyncio.Event()
    reached: list[object] = []

    async def held(interaction: Any, parent: Any) -> None:
        reached.append(parent)
        await erased.wait()
        await real(interaction, parent)

    monkeypatch.setattr(common, "_check_parent_posts_there", held)
    async with start_easel() as bot:
        forgotten = job_id_of(raiders := await imagine(fake, "a cat", user=RAIDER))
        pruned = job_id_of(mods := await imagine(fake, "a dog", user=MOD))
        rerolled = await fake.click(raiders, label="Reroll", user=OTHER)
        varied = await fake.click(mods, label="Vary (Subtle)", user=OTHER)

        async def both_reached() -> bool:
            return len(reached) == 2

        assert await until(both_reached)
        await (await forget_me(fake, user=RAIDER)).wait_for_answer()
        assert bot._db is not None
        assert (await store.prune_jobs(bot._db, time.time() + 1, 10)).job_ids == (pruned,)
        erased.set()

        assert (await rerolled.wait_for_answer()).content == gone(forgotten)
        assert (await varied.wait_for_answer()).content == gone(pruned)
        assert (await bot.services.history.page(OTHER, 0, guild_id=fake.guild_id)).total == 0
        assert await images_today(bot.services, OTHER, fake.guild_id) == 0


class HeldDeletes:
    """Delete clicks held where they delete their message (``_delete_clicked``: inside a
    moderator's ``History.deleting``, after a maker's unlink): a member's until ``release``
    (held only when named in ``holding``), and its answer returned only once ``answer`` is
    set, when named there; what each delete answered (False: found deleted already)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding: dict[int, asyncio.Event] = {}
        self.reached: dict[int, asyncio.Event] = {}
        self.answer: dict[int, asyncio.Event] = {}
        self.answered: dict[int, bool] = {}
        real = buttons._delete_clicked

        async def held(interaction: Any, **kwargs: Any) -> bool:
            clicker = interaction.user.id
            if clicker in self.holding:
                self.reached[clicker].set()
                await self.holding[clicker].wait()
            deleted = await real(interaction, **kwargs)
            self.answered[clicker] = deleted
            if clicker in self.answer:
                await self.answer[clicker].wait()
            return deleted

        monkeypatch.setattr(buttons, "_delete_clicked", held)

    def hold(self, *clickers: int) -> None:
        """A new round: ``clickers`` held until released."""
        self.answered.clear()
        self.answer.clear()
        self.holding = {clicker: asyncio.Event() for clicker in clickers}
        self.reached = {clicker: asyncio.Event() for clicker in clickers}

    async def until_reached(self, clicker: int) -> None:
        await asyncio.wait_for(self.reached[clicker].wait(), WAIT_S)

    async def until_answered(self, clicker: int) -> bool:
        async def answered() -> bool:
            return clicker in self.answered

        assert await until(answered)
        return self.answered[clicker]


async def audit_rows_of(fake: FakeDiscord, job_id: str) -> list[str]:
    return [row for row in (await audit_of(fake)).splitlines() if job_id in row]


async def withdrawn_and_audited(fake: FakeDiscord, bot: EaselBot, job_id: str) -> list[str]:
    """The audit's rows of ``job_id`` once it is withdrawn and audited (the audit's row is
    written after the withdrawal's, not with it)."""
    assert await until(lambda: withdrawn(bot, job_id))

    async def audited() -> bool:
        return bool(await audit_rows_of(fake, job_id))

    await until(audited)
    return await audit_rows_of(fake, job_id)


async def test_two_moderators_delete_at_once_the_audit_names_whose_delete_landed(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both clicks are deleting the post when its deletion's event is heard; then the other
    click's delete finds it gone (404). The first click's delete lands in one round, the
    second's in the other: each time the audit's one row names the moderator whose delete
    deleted it (it named the last to click, or Easel once that one's click ended)."""
    fake = fake_discord
    members(fake)
    fake.add_member(MOD_B, "mod-b", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    deletes = HeldDeletes(monkeypatch)
    heard = asyncio.Event()
    real_withdraw = withdrawals.WithdrawalsCog._withdraw

    async def noted(self: Any, *args: Any) -> None:
        heard.set()
        await real_withdraw(self, *args)

    monkeypatch.setattr(withdrawals.WithdrawalsCog, "_withdraw", noted)
    async with start_easel() as bot:
        for landed, found_gone in ((MOD, MOD_B), (MOD_B, MOD)):
            job = job_id_of(made := await imagine(fake, "a vile thing", user=RAIDER))
            deletes.hold(MOD, MOD_B)
            deletes.answer[landed] = heard
            heard.clear()
            await fake.click(made, label="Delete", user=MOD)
            await deletes.until_reached(MOD)
            await fake.click(made, label="Delete", user=MOD_B)
            await deletes.until_reached(MOD_B)
            deletes.holding[landed].set()
            await asyncio.wait_for(heard.wait(), WAIT_S)  # its answer is held until now
            deletes.holding[found_gone].set()
            assert await deletes.until_answered(found_gone) is False
            assert await deletes.until_answered(landed) is True
            [row] = await withdrawn_and_audited(fake, bot, job)
            assert f"<@{landed}> {WITHDRAWAL_AUDITED_AS}" in row, row
            [violation] = fake.take_violations()  # the 404 of a message deleted already
            assert violation.startswith("unknown-resource: click 'easel:delete:"), violation


async def test_the_maker_and_a_moderator_delete_at_once(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """The maker's Delete (which withdraws nothing) and a moderator's on one post: the job
    ends withdrawn as the moderator's, whichever click came first. The maker's first: the
    moderator is told so, and the job is withdrawn as theirs (they were told Easel had no
    record of the post, and nothing was withdrawn). The moderator's first: the maker's click
    leaves the post to it (it unlinked the post, and nothing was withdrawn)."""
    fake = fake_discord
    members(fake)
    deletes = HeldDeletes(monkeypatch)
    async with start_easel() as bot:
        job = job_id_of(made := await imagine(fake, "a vile thing", user=RAIDER))
        deletes.hold(RAIDER)
        await fake.click(made, label="Delete", user=RAIDER)
        await deletes.until_reached(RAIDER)  # its post unlinked, about to be deleted
        said = (await (await fake.click(made, label="Delete", user=MOD)).wait_for_answer()).content
        assert said.startswith(f"Its maker is deleting this post already. Withdrew job `{job}`")
        deletes.holding[RAIDER].set()
        assert await deletes.until_answered(RAIDER) is True
        [row] = await withdrawn_and_audited(fake, bot, job)
        assert f"<@{MOD}> {MODERATOR_WITHDRAWAL_AUDITED_AS}" in row, row

        job = job_id_of(made := await imagine(fake, "another vile thing", user=RAIDER))
        deletes.hold(MOD)
        await fake.click(made, label="Delete", user=MOD)
        await deletes.until_reached(MOD)  # deleting the post
        await (await fake.click(made, label="Delete", user=RAIDER)).wait_for_ack()
        assert RAIDER not in deletes.answered  # left to the moderator's click
        deletes.holding[MOD].set()
        assert await deletes.until_answered(MOD) is True
        [row] = await withdrawn_and_audited(fake, bot, job)
        assert f"<@{MOD}> {WITHDRAWAL_AUDITED_AS}" in row, row

        # The moderator's first, and Discord refuses their delete: the maker's click, which
        # waited for its answer, deletes the post (it was acknowledged and did nothing).
        made = await imagine(fake, "a third vile thing", user=RAIDER)
        deletes.hold(MOD)
        await fake.click(made, label="Delete", user=MOD)
        await deletes.until_reached(MOD)
        await (await fake.click(made, label="Delete", user=RAIDER)).wait_for_ack()
        fake.fail("DELETE", RESPONSE_ROUTE, status=REFUSED)  # the next: the moderator's
        error_logs.expect(rf"internal error \w+ in button DeleteButton for user {MOD} ")
        deletes.holding[MOD].set()
        assert await deletes.until_answered(RAIDER) is True
        assert MOD not in deletes.answered  # refused: raised
        assert fake.messages[made.id].deleted


async def test_a_purge_withdraws_at_once_all_but_a_post_a_click_is_deleting(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A moderator purges two posts (one bulk deletion) while another's Delete click on one
    is slow to reach Discord: the other post's job is withdrawn at once (it waited for the
    click). The clicked one waits for the click's answer (a 404: the purge deleted it), then
    is withdrawn as Easel's; a click still unanswered after ``CLICK_ANSWER_WAIT_S`` is waited
    for no more (logged)."""
    fake = fake_discord
    members(fake)
    deletes = HeldDeletes(monkeypatch)
    async with start_easel() as bot:
        by_easel = f"<@{fake.bot_user_id}> {WITHDRAWAL_AUDITED_AS}"
        for out_of_time in (False, True):
            if out_of_time:
                monkeypatch.setattr(bot_history, "CLICK_ANSWER_WAIT_S", 0.05)
            clicked_post = await imagine(fake, "a vile thing", user=RAIDER)
            other_post = await imagine(fake, "another vile thing", user=RAIDER)
            clicked, other = job_id_of(clicked_post), job_id_of(other_post)
            deletes.hold(MOD)
            await fake.click(clicked_post, label="Delete", user=MOD)
            await deletes.until_reached(MOD)
            await fake.delete_messages(clicked_post, other_post)
            [row] = await withdrawn_and_audited(fake, bot, other)
            assert by_easel in row, row
            if out_of_time:
                [row] = await withdrawn_and_audited(fake, bot, clicked)  # the click still held
                assert by_easel in row, row
                assert "still unanswered after 0 s" in caplog.text
            else:
                assert not await withdrawn(bot, clicked)
            deletes.holding[MOD].set()
            assert await deletes.until_answered(MOD) is False
            [row] = await withdrawn_and_audited(fake, bot, clicked)
            assert by_easel in row, row
            [violation] = fake.take_violations()  # the click's 404: the purge deleted it
            assert violation.startswith("unknown-resource: click 'easel:delete:"), violation


async def test_a_restore_answers_what_happened_to_the_job_meanwhile(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin's restore read the job withdrawn; before its write, the job's maker erased it,
    or another admin restored it (and a moderator maybe withdrew it again). Told so (it was
    told "Restored job"), and only the restore that restored it is audited."""
    fake = fake_discord
    members(fake)
    real = store.restore_job
    released: dict[str, asyncio.Event] = {}  # the first restore of each job waits for it
    reached: list[str] = []
    # The first restore of these jobs waits for it after its write too (before its re-read).
    reread: dict[str, asyncio.Event] = {}
    written: list[str] = []

    async def held(conn: Any, job_id: str, *args: Any, **kwargs: Any) -> list[str]:
        first = job_id not in reached
        if first:
            reached.append(job_id)
            await released[job_id].wait()
        restored = await real(conn, job_id, *args, **kwargs)
        if first and job_id in reread:
            written.append(job_id)
            await reread[job_id].wait()
        return restored

    async def restore(job_id: str) -> InteractionHandle:
        return await fake.invoke_command("easel-admin restore", {"job": job_id}, user=fake.owner_id)

    async def restores_reached(count: int) -> None:
        async def reached_count() -> bool:
            return len(reached) == count

        assert await until(reached_count)

    monkeypatch.setattr(store, "restore_job", held)
    async with start_easel() as bot:
        erased = job_id_of(await imagine(fake, "a vile thing", user=RAIDER))
        twice = job_id_of(await imagine(fake, "another vile thing", user=OTHER))
        again = job_id_of(await imagine(fake, "a third vile thing", user=OTHER))
        for job in (erased, twice, again):
            await reply_to(fake, "easel-mod withdraw", {"job": job}, user=MOD)
            assert await withdrawn(bot, job)
            released[job] = asyncio.Event()

        first = await restore(erased)
        await restores_reached(1)
        await (await forget_me(fake, user=RAIDER)).wait_for_answer()
        released[erased].set()
        assert (await first.wait_for_answer()).content.startswith(
            f"There is no job `{erased}` in this server"
        )

        first = await restore(twice)
        await restores_reached(2)
        second = (await (await restore(twice)).wait_for_answer()).content
        assert second.startswith(f"Restored job `{twice}`"), second
        released[twice].set()
        assert (await first.wait_for_answer()).content == (
            f"Job `{twice}` was restored already; there is nothing to restore."
        )
        assert len([row for row in await audit_rows_of(fake, twice) if "restore" in row]) == 1

        reread[again] = asyncio.Event()
        first = await restore(again)
        await restores_reached(3)
        second = (await (await restore(again)).wait_for_answer()).content
        assert second.startswith(f"Restored job `{again}`"), second
        released[again].set()

        async def first_written() -> bool:
            return again in written

        assert await until(first_written)  # it found nothing to restore
        await reply_to(fake, "easel-mod withdraw", {"job": again}, user=MOD)
        assert await withdrawn(bot, again)
        reread[again].set()
        assert (await first.wait_for_answer()).content == (
            f"Job `{again}` was restored meanwhile and withdrawn again since; restore it again "
            "if you mean to."
        )
