"""Admin power and quotas belong to one server; direct messages to the operator's settings."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.accounting import Member, limits_for
from bot.jobs.queue import CancelOutcome, JobQueue, QuotaExceeded, Submission
from bot.policy.guild import GuildList, GuildPolicy, NsfwPolicy
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota import UNLIMITED, QuotaLimits
from bot.policy.quota_status import QuotaStatus
from bot.user_errors import UserError
from db import jobs as journal
from db.quotas import LimitScope, set_limits
from inference.types import RenderRequest

OWNER, ADMIN, STRANGER = 1, 2, 3
GUILD_A, GUILD_B = 100, 200
DM_LIMITS = QuotaLimits(images_per_day=1)


def job_in(guild_id: int | None, *, user_id: int = OWNER, is_admin: bool = False) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest("a cat", seed=1, steps=2),
        user_id=user_id,
        guild_id=guild_id,
        is_admin=is_admin,
    )


def policy(conn: aiosqlite.Connection, *, allow_dms: bool) -> GuildPolicy:
    return GuildPolicy(conn, allow_dms=allow_dms, prompts=PromptPlanner(wildcards_dir=None))


def test_admin_power_needs_a_guild() -> None:
    assert Member(ADMIN, GUILD_A, is_admin=True).is_admin
    with pytest.raises(ValueError, match="direct message has no admins"):
        Member(ADMIN, None, is_admin=True)


async def test_only_the_guilds_own_admins_cancel_its_jobs(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # No render slot: the job stays queued while it is cancelled (or not).
    queue = JobQueue(conn, [], tmp_path / "images")
    job_id = await queue.submit(job_in(GUILD_A))

    # An admin elsewhere, and the owner elsewhere, hear what a made-up id would get.
    unknown = CancelOutcome.UNKNOWN
    assert await queue.cancel(job_id, Member(ADMIN, GUILD_B, is_admin=True)) is unknown
    assert await queue.cancel(job_id, Member(OWNER, GUILD_B)) is unknown
    assert await queue.cancel(job_id, Member(OWNER, None)) is unknown
    assert await queue.cancel("0123456789abcdef", Member(OWNER, GUILD_A)) is unknown
    assert await queue.cancel(job_id, Member(STRANGER, GUILD_A)) is CancelOutcome.NOT_YOURS
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.QUEUED

    admin_here = Member(ADMIN, GUILD_A, is_admin=True)
    assert await queue.cancel(job_id, admin_here) is CancelOutcome.CANCELLED


async def test_the_owner_cancels_a_direct_message_job_from_direct_messages(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue = JobQueue(conn, [], tmp_path / "images")
    job_id = await queue.submit(job_in(None))
    assert await queue.cancel(job_id, Member(OWNER, GUILD_A)) is CancelOutcome.UNKNOWN
    assert await queue.cancel(job_id, Member(OWNER, None)) is CancelOutcome.CANCELLED


async def test_an_admin_is_unlimited_only_in_the_guild_they_manage(
    conn: aiosqlite.Connection,
) -> None:
    await set_limits(conn, LimitScope.GUILD, GUILD_B, GUILD_B, {"images_per_day": 3}, now=0)
    assert await limits_for(conn, Member(ADMIN, GUILD_A, is_admin=True), DM_LIMITS) == UNLIMITED
    # The same person as a plain member of guild B gets guild B's limits.
    assert await limits_for(conn, Member(ADMIN, GUILD_B), DM_LIMITS) == QuotaLimits(
        images_per_day=3
    )
    assert await limits_for(conn, Member(ADMIN, None), DM_LIMITS) == DM_LIMITS


async def test_direct_messages_have_the_operators_quota(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue = JobQueue(conn, [], tmp_path / "images", dm_limits=DM_LIMITS)
    await queue.submit(job_in(None))
    assert await queue.quota_refusal(job_in(None)) is not None
    with pytest.raises(QuotaExceeded, match="You have used 1 of 1 images today"):
        await queue.submit(job_in(None))
    await queue.submit(job_in(GUILD_A))  # a guild's quota is its own

    report = await QuotaStatus(conn, DM_LIMITS).report(Member(OWNER, None))
    day = report.periods[0]
    assert (day.images, day.image_limit) == (1, 1)


async def test_direct_messages_are_refused_unless_the_operator_allows_them(
    conn: aiosqlite.Connection,
) -> None:
    request = RenderRequest("a cat", negative_prompt="dog")
    with pytest.raises(UserError, match="only in servers"):
        await policy(conn, allow_dms=False).admit(None, None, False, request)

    # A guild's rules stay in the guild; DMs get the rules of a guild nobody has configured.
    dms_on = policy(conn, allow_dms=True)
    await dms_on.change_list(GUILD_A, ADMIN, GuildList.BANNED_WORD, "cat", add=True)
    await dms_on.set_nsfw_policy(GUILD_A, ADMIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
    with pytest.raises(UserError, match="banned"):
        await dms_on.admit(GUILD_A, 5, True, request)
    admitted = await dms_on.admit(None, None, False, request)
    assert admitted.request.prompt == "a cat" and admitted.nsfw_policy is NsfwPolicy.ALLOW
