"""An admin's quota change and its audit row are one write (``accounting.set_limits``): a
failure between them leaves neither, so no limit is ever in force unaudited."""

from __future__ import annotations

import sqlite3

import aiosqlite
import pytest

from bot.jobs.accounting import Member, limits_for
from bot.policy.guild import GuildPolicy
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota import QuotaLimits
from db.quotas import LimitScope

GUILD, ADMIN, MEMBER = 100, 1, 2


async def test_a_quota_whose_audit_row_fails_is_not_set(conn: aiosqlite.Connection) -> None:
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    member = Member(MEMBER, GUILD)
    before = await limits_for(conn, member, QuotaLimits())
    # The audit row's write fails, after the limits' write in the same transaction.
    await conn.execute(
        "CREATE TEMP TRIGGER audit_refused BEFORE INSERT ON settings_audit"
        " BEGIN SELECT RAISE(ABORT, 'the audit row was refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="the audit row was refused"):
        await policy.set_quota(GUILD, ADMIN, LimitScope.USER, MEMBER, QuotaLimits(images_per_day=1))
    assert await conn.execute_fetchall("SELECT * FROM quota_limits") == []
    assert await policy.audit_log(GUILD) == []
    assert await limits_for(conn, member, QuotaLimits()) == before

    await conn.execute("DROP TRIGGER audit_refused")
    await policy.set_quota(GUILD, ADMIN, LimitScope.USER, MEMBER, QuotaLimits(images_per_day=1))
    assert (await limits_for(conn, member, QuotaLimits())).images_per_day == 1
    [entry] = await policy.audit_log(GUILD)
    assert (entry.user_id, entry.setting) == (ADMIN, f"quota:user:{MEMBER}")
