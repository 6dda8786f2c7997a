"""Servers sharing one Easel do not take each other's turns on its devices: a server's priority
role orders that server's jobs only, and the jobs of a server Easel was removed from render
nothing. Two servers on the fake Discord, one held device."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite
import pytest

from bot.app import build
from bot.bans import MemberStops
from bot.settings import Settings
from db import jobs as journal
from tests.conftest import ErrorLogs
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    images_today,
    reply_to,
)
from tests.fake_discord import AddedGuild, FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture

B_BLOCKER, B_MEMBER, A_PATRON, A_PLAIN, B_OTHER = 7001, 7002, 7003, 7004, 7005
MADE_UP_SERVER = 4242
WAIT_S = 30.0


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: commands synced to one server would exist there only.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


async def queued(
    fake: FakeDiscord, prompt: str, size: str, *, user: int, channel: int | None = None
) -> InteractionHandle:
    """``user`` runs /imagine and it is queued (answered). Sizes differ so that no two jobs
    share a batch: the render order is the queue's."""
    handle = await fake.invoke_command(
        "imagine", {"prompt": prompt, "steps": 2, "size": size}, user=user, channel=channel
    )
    await handle.wait_for_original(lambda message: not message.is_loading, timeout=WAIT_S)
    return handle


async def queued_behind_a_render(
    fake: FakeDiscord, engine: HeldEngine, server_b: AddedGuild, jobs: list[tuple[str, int]]
) -> InteractionHandle:
    """Server A's render holds the device (``engine`` held), then each of ``jobs`` (its
    prompt, its member) is queued in ``server_b`` behind it: A's interaction."""
    blocker = await queued(fake, "a blocker", "64x64", user=fake.user_id)
    assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
    for prompt, user in jobs:
        await queued(fake, prompt, "64x64", user=user, channel=server_b.channel_id)
    return blocker


async def no_unfinished_jobs(conn: aiosqlite.Connection, guild_id: int) -> bool:
    return not await journal.members_with_unfinished_jobs_in(conn, guild_id)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Waits until ``condition()`` holds, polling (a loaded machine may take a while)."""
    async with asyncio.timeout(WAIT_S):
        while not await condition():  # noqa: ASYNC110 (polled: the state is the journal's)
            await asyncio.sleep(0.05)


async def test_a_servers_priority_role_orders_its_own_jobs_not_another_servers(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Server A's owner makes a role a priority role: A's patron passes A's plain member, but
    not server B's member who queued first."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    for user, name in ((B_BLOCKER, "b-blocker"), (B_MEMBER, "b-member")):
        fake.add_member(user, name, roles=(other.member_role_id,), guild=other.guild_id)
    patrons = fake.add_role("Patron", 0)
    fake.add_member(A_PATRON, "a-patron", roles=(fake.member_role_id, patrons))
    fake.add_member(A_PLAIN, "a-plain", roles=(fake.member_role_id,))
    engine = HeldEngine()
    async with start_easel(lambda device: engine):
        added = await reply_to(
            fake,
            "easel-admin priority-role",
            {"action": "add", "role": patrons},
            user=fake.owner_id,
        )
        assert f"<@&{patrons}>" in added.content, added.content
        with engine:
            handles = [
                await queued(fake, "b blocker", "64x64", user=B_BLOCKER, channel=other.channel_id)
            ]
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            handles += [
                await queued(fake, "b first", "64x128", user=B_MEMBER, channel=other.channel_id),
                await queued(fake, "a plain", "128x64", user=A_PLAIN),
                await queued(fake, "a patron", "128x128", user=A_PATRON),
            ]
        for handle in handles:
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    rendered = [request.prompt for request in engine.rendered]
    assert rendered == ["b blocker", "b first", "a patron", "a plain"]


@pytest.mark.parametrize("cancels_miss", [False, True], ids=["cancelled", "refused-at-start"])
async def test_jobs_of_a_server_easel_was_removed_from_render_nothing(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    cancels_miss: bool,
) -> None:
    """Server B removes Easel with a member's jobs queued behind server A's render: they are
    cancelled, refunded, and never rendered; A's job renders. ``cancels_miss``: the removal's
    cancels find nothing (as if they raced the jobs), and the start gate refuses them."""
    if cancels_miss:

        async def found_nothing(*_args: object, **_kwargs: object) -> list[str]:
            return []

        monkeypatch.setattr(MemberStops, "cancel_server_jobs", found_nothing)
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    engine = HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        conn = bot._db
        assert conn is not None
        with engine:
            b_jobs = [(f"b job {n}", B_MEMBER) for n in range(3)]
            blocker = await queued_behind_a_render(fake, engine, other, b_jobs)
            history = bot.services.history
            left_behind = [
                line.job_id for line in await history.unfinished(B_MEMBER, guild_id=other.guild_id)
            ]
            assert len(left_behind) == 3
            assert await images_today(bot.services, B_MEMBER, other.guild_id) == 3

            async def easel_left() -> bool:
                return bot.get_guild(other.guild_id) is None

            await fake.remove_bot(guild=other.guild_id)
            await until(easel_left)
            if not cancels_miss:  # cancelled while A's render holds the device
                await until(lambda: no_unfinished_jobs(conn, other.guild_id))
        await blocker.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await until(lambda: no_unfinished_jobs(conn, other.guild_id))
        for job_id in left_behind:
            job = await journal.get_job(conn, job_id)
            assert job is not None and job.status is journal.JobStatus.CANCELLED, job
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
    assert [request.prompt for request in engine.rendered] == ["a blocker"]


async def test_one_members_failed_cancels_at_a_removal_are_logged_and_stop_no_others(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Server B removes Easel with three members' jobs queued; two members' cancels raise.
    Each of those is logged with its member's job id; the third member's job is cancelled;
    none renders (the start gate refuses the two left)."""
    failing = {B_BLOCKER, B_MEMBER}
    cancel_unfinished = MemberStops._cancel_unfinished

    async def refused_for_some(
        self: MemberStops, stop: Any, guild_id: int, user_id: int, *args: Any, **kwargs: Any
    ) -> list[str]:
        if user_id in failing:
            raise RuntimeError(f"member {user_id}'s cancels refused")
        return await cancel_unfinished(self, stop, guild_id, user_id, *args, **kwargs)

    monkeypatch.setattr(MemberStops, "_cancel_unfinished", refused_for_some)
    error_logs.expect(
        r"^server gone in guild \d+: member \d+'s job\(s\) [0-9a-f]{16} not cancelled"
    )
    fake = fake_discord
    other = fake.add_guild("Server B")
    for user in (B_BLOCKER, B_MEMBER, B_OTHER):
        fake.add_member(user, f"b-{user}", roles=(other.member_role_id,), guild=other.guild_id)
    engine = HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        conn = bot._db
        assert conn is not None
        with engine:
            b_jobs = [(f"b {user}", user) for user in (B_BLOCKER, B_MEMBER, B_OTHER)]
            blocker = await queued_behind_a_render(fake, engine, other, b_jobs)
            jobs = await journal.members_with_unfinished_jobs_in(conn, other.guild_id)
            await fake.remove_bot(guild=other.guild_id)

            async def logged_each_failure() -> bool:
                logged = " ".join(record.getMessage() for record in error_logs.records)
                return all(jobs[user][0] in logged for user in failing)

            await until(logged_each_failure)
            [cancelled] = jobs[B_OTHER]
            job = await journal.get_job(conn, cancelled)
            assert job is not None and job.status is journal.JobStatus.CANCELLED, job
        await blocker.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await until(lambda: no_unfinished_jobs(conn, other.guild_id))
    assert [request.prompt for request in engine.rendered] == ["a blocker"]


async def test_no_server_reads_as_removed_before_the_gateways_ready(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """Before READY discord.py knows no server: a restart's restored jobs must not read as
    those of servers Easel left; once READY, a server it is not in does."""
    bot = build(easel_settings_for_test, lambda device: HeldEngine())
    assert not bot.removed_from(fake_discord.guild_id)
    assert not bot.removed_from(MADE_UP_SERVER)
    async with running_bot(fake_discord, bot):
        assert not bot.removed_from(fake_discord.guild_id)
        assert bot.removed_from(MADE_UP_SERVER)


async def test_a_servers_outage_is_not_a_removal(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A Discord outage (GUILD_DELETE ``unavailable``, then GUILD_CREATE) leaves the server's
    queued job alone: it renders."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    engine = HeldEngine()
    async with start_easel(lambda device: engine):
        with engine:
            blocker = await queued(fake, "a blocker", "64x64", user=fake.user_id)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            waiting = await queued(
                fake, "b waiting", "64x128", user=B_MEMBER, channel=other.channel_id
            )
            await fake.guild_outage(guild=other.guild_id)
        for handle in (blocker, waiting):
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert [request.prompt for request in engine.rendered] == ["a blocker", "b waiting"]
