"""A moderator's day (Manage Messages, not Manage Server), through the fake Discord: /easel-mod
lists a member's jobs in the channels they moderate and withdraws one or all of them (audited
as theirs, undone by /easel-admin restore); the Info menu names a re-posted picture's maker to
them; their Delete click is audited as theirs; their Cancel stops and withdraws a job. A
moderator of one channel reaches that channel's jobs alone, and another server's job id is
refused as one that does not exist."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite
import pytest

import cogs.visibility as visibility
from bot.app import EaselBot
from bot.history import (
    MODERATOR_WITHDRAWAL_AUDITED_AS,
    WITHDRAWAL_AUDITED_AS,
    ModeratorWithdrawal,
)
from bot.jobs.queue import FinishedJob
from bot.jobs.queue.delivery import Delivery
from bot.jobs.queue.journal_writes import JournalWriter
from bot.policy.delivery import MODERATOR_STOPPED
from bot.settings import Settings
from db import jobs as journal
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    images_today,
    imagine,
    job_id_of,
    past_the_tokens,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS
from tests.support.pictures import has_picture

RAIDER = 7101
OTHER = 7102
MOD = 7103
CHANNEL_MOD = 7104
ROLE_MOD = 7105
MANAGE_MESSAGES = 1 << 13
WAIT_S = 60.0  # generous: a loaded 2-core machine
REFUSED = "is yours to withdraw"
MODERATES_NONE = "You have Manage Messages in no channel where"


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally (commands synced to one server exist there only): a job of another
    # server is made too.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


async def until(check: Callable[[], Awaitable[bool]]) -> bool:
    """Polls ``check`` until it holds (True) or ``WAIT_S`` pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


def members(fake: FakeDiscord) -> int:
    """The raider, another member, a server-wide moderator and a moderator of a side channel
    alone (its id returned)."""
    fake.add_member(RAIDER, "raider", roles=(fake.member_role_id,))
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    fake.add_member(MOD, "mod", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    fake.add_member(CHANNEL_MOD, "chanmod", roles=(fake.member_role_id,))
    side = fake.add_text_channel("side")
    fake.set_overwrite(side, CHANNEL_MOD, allow=MANAGE_MESSAGES)
    return side


def role_moderator(fake: FakeDiscord) -> int:
    """A moderator by role, as on a real server (Manage Messages server-wide, from a role that
    discord.py's cache holds), and a channel whose overwrite denies it to that role (its id)."""
    mods = fake.add_role("Mods", MANAGE_MESSAGES)
    fake.add_member(ROLE_MOD, "rolemod", roles=(fake.member_role_id, mods))
    denied = fake.add_text_channel("no-mods")
    fake.set_overwrite(denied, mods, deny=MANAGE_MESSAGES)
    return denied


async def made_in(fake: FakeDiscord, channel: int, prompt: str) -> str:
    """The raider's job made in ``channel``, once posted: its id."""
    handle = await fake.invoke_command(
        "imagine", {"prompt": prompt, **QUICK}, user=RAIDER, channel=channel
    )
    return job_id_of(await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))


async def all_ended(fake: FakeDiscord, bot: EaselBot, jobs: int) -> None:
    """Waits until the raider's ``jobs`` jobs here have all ended."""
    history = bot.services.history

    async def ended() -> bool:
        page = await history.page(RAIDER, 0, guild_id=fake.guild_id)
        unfinished = await history.unfinished(RAIDER, guild_id=fake.guild_id)
        return page.total == jobs and not unfinished

    assert await until(ended)


async def withdrawn(bot: EaselBot, job_id: str) -> bool:
    stored = await bot.services.history.job(job_id)
    return stored is not None and stored.withdrawn


async def audit_of(fake: FakeDiscord) -> str:
    return (await reply_to(fake, "easel-admin audit", user=fake.owner_id)).content


async def test_a_moderator_lists_and_withdraws_a_members_jobs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        first = await imagine(fake, "a vile thing", user=RAIDER)
        second = await imagine(fake, "another *vile* thing", user=RAIDER)
        await reply_to(fake, "settings", {"private_results": True}, user=RAIDER)
        secret = job_id_of(await imagine(fake, "a private thing", user=RAIDER))
        jobs = [job_id_of(first), job_id_of(second)]

        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=MOD)
        assert listed.is_ephemeral, listed.content
        assert all(job in listed.content for job in jobs), listed.content
        assert secret not in listed.content and "private thing" not in listed.content
        assert "1 private job" in listed.content, listed.content
        # Newest first, the prompt escaped, a link to each post.
        assert listed.content.index(jobs[1]) < listed.content.index(jobs[0])
        assert "another \\*vile\\* thing" in listed.content
        for post in (first, second):
            assert f"/{fake.guild_id}/{fake.channel_id}/{post.id}" in listed.content

        answer = await reply_to(fake, "easel-mod withdraw", {"member": RAIDER}, user=MOD)
        assert answer.is_ephemeral and "Withdrew 2 jobs" in answer.content, answer.content
        assert "/easel-admin restore" in answer.content and "1 private job" in answer.content
        assert all([await withdrawn(bot, job) for job in jobs])
        assert not await withdrawn(bot, secret)
        # The buttons of the member's results refuse everyone now.
        click = await fake.click(first, f"easel:reroll:{jobs[0]}", user=OTHER)
        refused = await click.wait_for_answer()
        assert refused.is_ephemeral and not has_picture(refused), refused.content
        assert f"<@{MOD}> {MODERATOR_WITHDRAWAL_AUDITED_AS}" in await audit_of(fake)

        restored = await reply_to(fake, "easel-admin restore", {"job": jobs[0]}, user=fake.owner_id)
        assert "Restored" in restored.content, restored.content
        assert not await withdrawn(bot, jobs[0]) and await withdrawn(bot, jobs[1])


async def test_a_channel_moderator_reaches_their_channels_jobs_alone(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    side = members(fake)
    other_server = fake.add_guild("Other server")
    fake.add_member(
        RAIDER, "raider", roles=(other_server.member_role_id,), guild=other_server.guild_id
    )
    async with start_easel() as bot:
        main_job = job_id_of(await imagine(fake, "in main", user=RAIDER))
        handle = await fake.invoke_command(
            "imagine", {"prompt": "in side", **QUICK}, user=RAIDER, channel=side
        )
        side_job = job_id_of(await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))
        elsewhere = await fake.invoke_command(
            "imagine", {"prompt": "there", **QUICK}, user=RAIDER, channel=other_server.channel_id
        )
        there = job_id_of(await elsewhere.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))

        listed = await reply_to(
            fake, "easel-mod jobs", {"member": RAIDER}, user=CHANNEL_MOD, channel=side
        )
        assert side_job in listed.content and main_job not in listed.content, listed.content
        assert "1 job made in channels where you lack Manage Messages" in listed.content

        def withdraw(job: str, user: int = CHANNEL_MOD) -> Awaitable[StoredMessage]:
            return reply_to(fake, "easel-mod withdraw", {"job": job}, user=user, channel=side)

        refusals = [await withdraw(job) for job in (main_job, there, "0123456789abcdef")]
        texts = [
            refusal.content.replace(job, "<id>")
            for refusal, job in zip(refusals, (main_job, there, "0123456789abcdef"), strict=True)
        ]
        assert REFUSED in texts[0] and texts[0] == texts[1] == texts[2], texts
        assert not await withdrawn(bot, main_job) and not await withdrawn(bot, there)

        # A member without Manage Messages anywhere: nothing listed nor withdrawn, and told
        # nothing of the member's jobs (the same answer as for a member who made none).
        for command in ("easel-mod jobs", "easel-mod withdraw"):
            plain = await reply_to(fake, command, {"member": RAIDER}, user=OTHER)
            none_made = await reply_to(fake, command, {"member": MOD}, user=OTHER)
            assert MODERATES_NONE in plain.content and "2 jobs" not in plain.content, plain
            assert plain.content.replace(str(RAIDER), "") == none_made.content.replace(str(MOD), "")
        assert REFUSED in (await withdraw(main_job, OTHER)).content
        assert not await withdrawn(bot, main_job) and not await withdrawn(bot, side_job)

        done = await withdraw(side_job)
        assert f"Withdrew job `{side_job}`" in done.content
        assert await withdrawn(bot, side_job) and not await withdrawn(bot, main_job)
        # All the member's jobs: those of the side channel alone, none left there now.
        again = await reply_to(
            fake, "easel-mod withdraw", {"member": RAIDER}, user=CHANNEL_MOD, channel=side
        )
        assert "Nothing to withdraw" in again.content, again.content
        assert "1 job made in channels where you lack Manage Messages" in again.content
        assert not await withdrawn(bot, main_job)
        assert f"<@{CHANNEL_MOD}> {MODERATOR_WITHDRAWAL_AUDITED_AS}" in await audit_of(fake)
        # Shown by default to those with Manage Messages, in servers only.
        group = next(c for c in fake.registered_commands() if c["name"] == "easel-mod")
        assert int(group["default_member_permissions"]) == MANAGE_MESSAGES
        assert group["contexts"] == [0]


async def test_info_names_a_reposts_maker_to_a_moderator_of_that_channel(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    side = members(fake)
    async with start_easel() as bot:
        made = await imagine(fake, "a vile thing", user=RAIDER)
        job = job_id_of(made)
        png = made.attachments[0].data
        repost = await fake.post_user_message("lol", user=OTHER, attachments=[("cool.png", png)])

        async def info(user: int, message: StoredMessage = repost) -> str:
            handle = await fake.invoke_message_command("Info", message, user=user)
            return (await handle.wait_for_answer()).content

        told = await info(MOD)
        assert f"Easel job `{job}` by <@{RAIDER}>" in told, told
        assert f"/{fake.guild_id}/{fake.channel_id}/{made.id}" in told and "a vile thing" in told
        for plain in (OTHER, CHANNEL_MOD):  # CHANNEL_MOD moderates the side channel alone
            assert job not in await info(plain)
        # Re-posted in the side channel: its moderator is not told of a job made in main.
        side_post = await fake.post_user_message(
            "again", user=OTHER, attachments=[("cool.png", png)], channel=side
        )
        assert job not in await info(CHANNEL_MOD, side_post)
        # The loop closed: the moderator withdraws the original by the id Info gave.
        done = await reply_to(fake, "easel-mod withdraw", {"job": job}, user=MOD)
        assert f"Withdrew job `{job}`" in done.content, done.content
        assert await withdrawn(bot, job)


async def test_a_moderators_delete_click_is_audited_as_theirs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        clicked = job_id_of(made := await imagine(fake, "a vile thing", user=RAIDER))
        await fake.click(made, label="Delete", user=MOD)
        assert await until(lambda: withdrawn(bot, clicked))
        in_discord = job_id_of(other := await imagine(fake, "another", user=RAIDER))
        await fake.delete_messages(other)  # no clicker known: Easel's
        assert await until(lambda: withdrawn(bot, in_discord))
        rows = (await audit_of(fake)).splitlines()
        by_mod = [row for row in rows if clicked in row]
        assert len(by_mod) == 1 and f"<@{MOD}> {WITHDRAWAL_AUDITED_AS}" in by_mod[0], rows
        by_easel = [row for row in rows if in_discord in row]
        assert len(by_easel) == 1 and f"<@{fake.bot_user_id}>" in by_easel[0], rows


def deliveries_recorded(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs whose delivery ended, in order, from now on."""
    delivered: list[str] = []
    deliver = bot.results.deliver

    async def recorded(finished: FinishedJob) -> int | None:
        try:
            return await deliver(finished)
        finally:
            delivered.append(finished.job_id)

    monkeypatch.setattr(bot.results, "deliver", recorded)
    return delivered


async def queued_with_cancel(fake: FakeDiscord) -> tuple[StoredMessage, str, str]:
    """The raider's job, queued: its progress message, its Cancel's custom id, its id."""
    handle = await fake.invoke_command("imagine", {**QUICK, "prompt": "a vile thing"}, user=RAIDER)
    queued = await handle.wait_for_original(
        lambda m: any("cancel" in c for c in m.custom_ids), timeout=WAIT_S
    )
    cancel = next(c for c in queued.custom_ids if "cancel" in c)
    return queued, cancel, cancel.rsplit(":", 1)[1]


async def delivery_ended(fake: FakeDiscord, delivered: list[str], job: str) -> None:
    """Waits until ``job``'s delivery ended. Its progress message (a post of the withdrawn
    job) may be deleted with it: Easel's later edit of it is then told "unknown message", as
    after a moderator's deletion, and no other rule may be broken."""

    async def its_delivery_ended() -> bool:
        return job in delivered

    assert await until(its_delivery_ended)
    violations = fake.take_violations()
    assert all(v.startswith("unknown-resource") for v in violations), violations


async def cancelled_by_a_moderator(
    fake: FakeDiscord, bot: EaselBot, queued: StoredMessage, cancel: str, job: str
) -> str:
    """The moderator's Cancel on the job's progress message, after others' were refused: what
    they are told."""
    for refused_user in (OTHER, CHANNEL_MOD):  # CHANNEL_MOD moderates the side channel
        said = await (await fake.click(queued, cancel, user=refused_user)).wait_for_answer()
        assert "or a member with Manage Messages in its channel" in said.content, said.content
    assert not await withdrawn(bot, job)
    return (await (await fake.click(queued, cancel, user=MOD)).wait_for_answer()).content


async def withdrawn_by_a_moderator(
    fake: FakeDiscord, bot: EaselBot, queued: StoredMessage, cancel: str, job: str
) -> str:
    """The moderator's ``/easel-mod withdraw job:``: what they are told."""
    return (await reply_to(fake, "easel-mod withdraw", {"job": job}, user=MOD)).content


@pytest.mark.parametrize("stop", [cancelled_by_a_moderator, withdrawn_by_a_moderator])
async def test_a_moderators_stop_withdraws_the_job_and_tells_its_maker(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    stop: Callable[[FakeDiscord, EaselBot, StoredMessage, str, str], Awaitable[str]],
) -> None:
    """Its maker is told plainly that a moderator stopped it, and that it does not count, in
    its progress message, naming no moderator (``/history`` says "removed by a moderator")."""
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        delivered = deliveries_recorded(bot, monkeypatch)
        queued, cancel, job = await queued_with_cancel(fake)
        said = await stop(fake, bot, queued, cancel, job)
        assert f"Withdrew job `{job}`" in said and "it is stopped" in said, said
        assert "the stop cannot be undone (a restore lifts only the withdrawal" in said, said
        gate.set()

        async def ended_cancelled() -> bool:
            stored = await bot.services.history.job(job)
            return stored is not None and stored.status == "cancelled"

        assert await until(ended_cancelled) and await withdrawn(bot, job)
        assert await images_today(bot.services, RAIDER, fake.guild_id) == 0  # refunded
        assert f"<@{MOD}> {MODERATOR_WITHDRAWAL_AUDITED_AS}" in await audit_of(fake)
        assert not [m for m in fake.messages.values() if has_picture(m) and not m.deleted]
        assert "removed by a moderator" in (await reply_to(fake, "history", user=RAIDER)).content

        await delivery_ended(fake, delivered, job)
        told = fake.messages[queued.id].content
        assert f"<@{RAIDER}> Stopped (job `{job}`): {MODERATOR_STOPPED}." in told, told
        assert "does not count against your quota" in told and f"<@{MOD}>" not in told, told
        # Its restore is told true: a job stopped before it rendered has no pictures to show.
        restored = await reply_to(fake, "easel-admin restore", {"job": job}, user=fake.owner_id)
        assert f"Restored job `{job}`: it was stopped before it rendered, so it has no " in (
            restored.content
        )


def start_held(
    bot: EaselBot, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Each job handed to its device waits at its start gate until the first event is set;
    the second is set once one reached it."""
    gate = calls_held(bot.results, "why_not_started", monkeypatch)
    started = asyncio.Event()
    held_start = bot.results.why_not_started

    async def start_noted(finished: FinishedJob) -> str | None:
        started.set()
        return await held_start(finished)

    monkeypatch.setattr(bot.results, "why_not_started", start_noted)
    return gate, started


@pytest.mark.parametrize("at_its_start", [False, True])
async def test_a_members_own_cancel_before_a_moderators_withdrawal_is_told_as_theirs(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    at_its_start: bool,
) -> None:
    """The member cancels their job (``at_its_start``: once handed to its device, its start
    held), then a moderator withdraws it before its notice goes out: the first stop is the
    member's, so the notice says "Cancelled", never that a moderator stopped it."""
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        gate, started = start_held(bot, monkeypatch)  # it never renders
        notices = calls_held(Delivery, "notice", monkeypatch)
        delivered = deliveries_recorded(bot, monkeypatch)
        queued, cancel, job = await queued_with_cancel(fake)
        if at_its_start:
            await asyncio.wait_for(started.wait(), WAIT_S)
        # Queued, it ends at once, and its answer waits for its notice; handed to its device
        # (waiting on the start gate), its stop is asked, and it ends once the gate opens.
        click = await fake.click(queued, cancel, user=RAIDER)

        async def its_cancel_recorded() -> bool:
            stored = await journal.get_job(bot._db, job)
            return stored is not None and (
                stored.status is journal.JobStatus.CANCELLED or stored.cancel_asked_at is not None
            )

        assert await until(its_cancel_recorded)
        withdrew = await withdrawn_by_a_moderator(fake, bot, queued, cancel, job)
        assert f"Withdrew job `{job}`" in withdrew and await withdrawn(bot, job), withdrew
        gate.set()
        notices.set()
        assert "nothing" in (await click.wait_for_answer()).content  # was or is charged
        await delivery_ended(fake, delivered, job)
        told = fake.messages[queued.id].content
        assert told == f"<@{RAIDER}> Cancelled (job `{job}`); no pictures were charged.", told
        assert not [m for m in fake.messages.values() if MODERATOR_STOPPED in (m.content or "")]


def write_locked_once(
    monkeypatch: pytest.MonkeyPatch, job: str, its: str
) -> tuple[asyncio.Event, asyncio.Event, asyncio.Event]:
    """``job``'s first write of ``its`` ("end", "stop asked") finds another connection's lock
    at its first try (rolled back, tried again by ``JournalWriter``), and its next try waits
    for the test; later writes of it are left alone: (refused, retry, written)."""
    refused, retry, written = asyncio.Event(), asyncio.Event(), asyncio.Event()
    write = JournalWriter.write
    first: list[Callable[[], Awaitable[Any]]] = []

    async def locked_once(
        writer: JournalWriter, what: str, body: Callable[[], Awaitable[Any]], **options: Any
    ) -> Any:
        if what != f"job {job}: its {its}" or (first and first[0] is not body):
            return await write(writer, what, body, **options)
        first.append(body)

        async def tried() -> Any:
            if not refused.is_set():
                refused.set()
                raise aiosqlite.OperationalError("database is locked")
            await retry.wait()
            try:
                return await body()
            finally:
                written.set()

        return await write(writer, what, tried, **options)

    monkeypatch.setattr(JournalWriter, "write", locked_once)
    return refused, retry, written


@pytest.mark.parametrize("running", [False, True])
async def test_a_members_cancel_clicked_first_stays_theirs_while_its_write_waits_for_the_lock(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    running: bool,
) -> None:
    """The member clicks Cancel on their job first: queued, its end waits to be tried again
    (another writer's lock); ``running`` (handed to its device, its start held), the ask of its
    stop does. Meanwhile a moderator's withdrawal commits and stops it: the first click is the
    member's, so the journal and the notice say they cancelled it, not a moderator."""
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        gate, started = start_held(bot, monkeypatch)
        notices = calls_held(Delivery, "notice", monkeypatch)
        delivered = deliveries_recorded(bot, monkeypatch)
        if not running:  # another member's job holds the one device: the raider's waits
            await fake.invoke_command("imagine", {**QUICK, "prompt": "a calm lake"}, user=OTHER)
            await asyncio.wait_for(started.wait(), WAIT_S)
        queued, cancel, job = await queued_with_cancel(fake)
        await asyncio.wait_for(started.wait(), WAIT_S)
        stored = await journal.get_job(bot._db, job)
        status = journal.JobStatus.RUNNING if running else journal.JobStatus.QUEUED
        assert stored is not None and stored.status is status, stored
        refused, retry, written = write_locked_once(
            monkeypatch, job, "stop asked" if running else "end"
        )
        click = await fake.click(queued, cancel, user=RAIDER)
        await asyncio.wait_for(refused.wait(), WAIT_S)
        withdrew = await withdrawn_by_a_moderator(fake, bot, queued, cancel, job)
        assert f"Withdrew job `{job}`" in withdrew and await withdrawn(bot, job), withdrew
        retry.set()
        # Written before its start ends it: the ask of a job that ended meanwhile changes nothing.
        await asyncio.wait_for(written.wait(), WAIT_S)
        gate.set()
        notices.set()
        assert "nothing" in (await click.wait_for_answer()).content
        await delivery_ended(fake, delivered, job)
        stored = await journal.get_job(bot._db, job)
        assert stored is not None and stored.stopped_by is journal.StoppedBy.MEMBER, stored
        told = fake.messages[queued.id].content
        assert told == f"<@{RAIDER}> Cancelled (job `{job}`); no pictures were charged.", told


async def test_a_member_deleting_their_own_progress_message_is_not_told_a_moderator_stopped_it(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its queued job's progress message deleted after the interaction's token expired (a long
    queue, a restart): Discord does not say who deleted it, and no moderator's act is recorded,
    so the post that replaces it says "Cancelled", never that a moderator stopped it."""
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        delivered = deliveries_recorded(bot, monkeypatch)
        queued, _, job = await queued_with_cancel(fake)
        past_the_tokens(fake, bot, 16 * 60)  # the token expired: a new post in its place
        await fake.delete_messages(queued)  # its maker's own deletion, as far as Easel knows
        assert await until(lambda: withdrawn(bot, job))
        gate.set()
        await delivery_ended(fake, delivered, job)
        shown = [m.content or "" for m in fake.messages.values() if not m.deleted]
        told = [text for text in shown if job in text]
        assert told == [f"<@{RAIDER}> Cancelled (job `{job}`); no pictures were charged."], told


async def test_a_moderators_list_pages_through_a_members_jobs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        for prompt in ("a fox --repeat 3", "a cat --repeat 3"):  # four at most a time
            await fake.invoke_command("imagine", {"prompt": prompt, **QUICK}, user=RAIDER)
        await all_ended(fake, bot, 6)
        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=MOD)
        assert "page 1/2 (6 in all)" in listed.content, listed.content
        shown = set(re.findall(r"`([0-9a-f]{16})`", listed.content))
        await fake.click(listed, label="Next ▶", user=MOD)

        async def turned() -> bool:
            return "page 2/2" in fake.messages[listed.id].content

        assert await until(turned)
        rest = set(re.findall(r"`([0-9a-f]{16})`", fake.messages[listed.id].content))
        assert len(shown) == 5 and len(rest) == 1 and not shown & rest


async def test_a_role_moderator_acts_from_one_channel_on_jobs_made_in_others(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    side = members(fake)
    denied = role_moderator(fake)
    async with start_easel() as bot:
        in_side = await made_in(fake, side, "in side")
        in_denied = await made_in(fake, denied, "in denied")
        # Typed in the main channel, where the raider made nothing: each job's channel is
        # read from the server's roles and overwrites.
        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=ROLE_MOD)
        assert in_side in listed.content and in_denied not in listed.content, listed.content
        assert "1 job made in channels where you lack Manage Messages" in listed.content
        refused = await reply_to(fake, "easel-mod withdraw", {"job": in_denied}, user=ROLE_MOD)
        assert REFUSED in refused.content, refused.content
        done = await reply_to(fake, "easel-mod withdraw", {"job": in_side}, user=ROLE_MOD)
        assert f"Withdrew job `{in_side}`" in done.content, done.content
        by_member = await reply_to(fake, "easel-mod withdraw", {"member": RAIDER}, user=ROLE_MOD)
        assert "Nothing to withdraw" in by_member.content, by_member.content
        assert await withdrawn(bot, in_side) and not await withdrawn(bot, in_denied)


async def test_a_moderator_out_of_a_private_thread_reaches_none_of_its_jobs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    role_moderator(fake)
    async with start_easel() as bot:
        thread = fake.add_thread("secret", private=True, owner=RAIDER, members=[fake.bot_user_id])
        job = await made_in(fake, thread, "a secret plan")
        assert fake.permissions_in(thread, ROLE_MOD) == 0  # Discord's: they cannot see it
        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=ROLE_MOD)
        assert job not in listed.content and "secret plan" not in listed.content, listed.content
        refused = await reply_to(fake, "easel-mod withdraw", {"job": job}, user=ROLE_MOD)
        assert REFUSED in refused.content, refused.content
        await reply_to(fake, "easel-mod withdraw", {"member": RAIDER}, user=ROLE_MOD)
        assert not await withdrawn(bot, job)
        # Added to the thread, they moderate it.
        fake.set_thread_member(thread, ROLE_MOD)
        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=ROLE_MOD)
        assert job in listed.content and "secret plan" in listed.content, listed.content


async def test_a_withdrawal_names_what_was_asked_and_leaves_the_members_private_jobs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        history = bot.services.history
        first = await imagine(fake, "a vile thing", user=RAIDER)
        second = await imagine(fake, "another vile thing", user=RAIDER)

        async def varied_privately(post: StoredMessage, user: int) -> str:
            """``user`` varies ``post`` with private results on: the private job's id."""
            await reply_to(fake, "settings", {"private_results": True}, user=user)
            click = await fake.click(post, label="Vary (Subtle)", user=user)
            await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            made = (await history.page(user, 0, guild_id=fake.guild_id)).lines[0].job_id
            stored = await history.job(made)
            assert stored is not None and stored.private
            return made

        others = await varied_privately(first, OTHER)
        raiders = await varied_privately(second, RAIDER)

        # By id: the job asked for is named; another member's private job made from it goes
        # with it, as with a Delete, counted only.
        by_id = await reply_to(fake, "easel-mod withdraw", {"job": job_id_of(first)}, user=MOD)
        assert f"Withdrew job `{job_id_of(first)}`" in by_id.content, by_id.content
        assert others not in by_id.content and "1 more job" in by_id.content, by_id.content
        assert await withdrawn(bot, others)
        # By member: their public jobs, named; their private one neither withdrawn nor named.
        by_member = await reply_to(fake, "easel-mod withdraw", {"member": RAIDER}, user=MOD)
        said = by_member.content
        assert f"Withdrew 1 job of <@{RAIDER}>" in said and job_id_of(second) in said, said
        assert raiders not in said and "more job" not in said, said
        assert "Left out: 1 private job" in said, said
        assert await withdrawn(bot, job_id_of(second)) and not await withdrawn(bot, raiders)


async def test_the_page_button_answers_before_asking_discord_about_channels(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    members(fake)
    role_moderator(fake)  # MOD's Manage Messages is in interactions alone
    async with start_easel() as bot:
        delivered = deliveries_recorded(bot, monkeypatch)
        threads = [
            fake.add_thread(f"t{i}", owner=RAIDER, members=[fake.bot_user_id]) for i in range(4)
        ]
        for i, thread in enumerate(threads):
            prompt = "a fox --repeat 3" if i == 0 else f"a cat {i}"
            await fake.invoke_command(
                "imagine", {"prompt": prompt, **QUICK}, user=RAIDER, channel=thread
            )

        async def all_delivered() -> bool:  # a post would unarchive its thread
            return len(delivered) == 6

        assert await until(all_delivered)
        for thread in threads:
            await fake.archive_thread(thread)

        async def forgotten() -> bool:  # discord.py drops archived threads from its cache
            guild = bot.get_guild(fake.guild_id)
            return guild is not None and all(guild.get_thread(t) is None for t in threads)

        assert await until(forgotten)
        fetched = visibility._fetched_channel

        async def slow(client: Any, channel_id: int, timeout_s: float) -> Any:
            await asyncio.sleep(0.9)  # Discord answering each ask in 0.9 s: 3.6 s for four
            return await fetched(client, channel_id, timeout_s)

        monkeypatch.setattr(visibility, "_fetched_channel", slow)
        listed = await reply_to(fake, "easel-mod jobs", {"member": RAIDER}, user=ROLE_MOD)
        assert "page 1/2" in listed.content, listed.content
        await fake.click(listed, label="Next ▶", user=ROLE_MOD)

        async def turned() -> bool:
            return "page 2/2" in fake.messages[listed.id].content

        assert await until(turned)
        assert not fake.take_violations()  # no answer later than Discord's 3 s


async def test_a_moderators_cancel_of_a_job_that_finished_meanwhile_says_so(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    members(fake)
    async with start_easel() as bot:
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        delivered = deliveries_recorded(bot, monkeypatch)
        history = bot.services.history
        withdraw = history.withdraw_by_moderator

        async def once_it_ended(job_id: str, by: int) -> ModeratorWithdrawal:
            """The job renders and ends between the Cancel's read of it and its withdrawal."""
            gate.set()

            async def ended() -> bool:
                stored = await history.job(job_id)
                return stored is not None and stored.status not in ("queued", "running")

            assert await until(ended)
            return await withdraw(job_id, by)

        monkeypatch.setattr(history, "withdraw_by_moderator", once_it_ended)
        queued, cancel, job = await queued_with_cancel(fake)
        said = await (await fake.click(queued, cancel, user=MOD)).wait_for_answer()
        assert f"Withdrew job `{job}`" in said.content, said.content
        assert "finished meanwhile" in said.content and "not charged" not in said.content
        assert await withdrawn(bot, job)
        await delivery_ended(fake, delivered, job)
