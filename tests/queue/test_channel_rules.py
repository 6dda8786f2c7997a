"""Where Easel may work has one set of rules: ``GuildPolicy.check_channel`` (work that is not a
job, e.g. /describe) and ``admit`` (jobs) refuse the same places with the same sentence."""

from __future__ import annotations

import aiosqlite
import pytest

from bot.policy.guild import DMS_OFF, GuildList, GuildPolicy
from bot.policy.prompt_safety import PromptPlanner
from bot.user_errors import UserError
from inference.types import RenderRequest

GUILD, ADMIN, ENABLED, OTHER = 100, 1, 7, 8
CAT = RenderRequest("a cat", seed=1, steps=2)


async def _refusal(check: object) -> str | None:
    try:
        await check  # type: ignore[misc]
    except UserError as error:
        return str(error)
    return None


@pytest.mark.parametrize("allow_dms", [False, True])
@pytest.mark.parametrize(
    ("guild_id", "channel_id"), [(None, None), (GUILD, ENABLED), (GUILD, OTHER), (GUILD, None)]
)
async def test_check_channel_and_admit_refuse_the_same_places(
    conn: aiosqlite.Connection, allow_dms: bool, guild_id: int | None, channel_id: int | None
) -> None:
    policy = GuildPolicy(conn, allow_dms=allow_dms, prompts=PromptPlanner(wildcards_dir=None))
    await policy.change_list(GUILD, ADMIN, GuildList.ALLOWED_CHANNEL, str(ENABLED), add=True)
    checked = await _refusal(policy.check_channel(guild_id, channel_id))
    admitted = await _refusal(policy.admit(guild_id, channel_id, False, CAT))
    assert checked == admitted
    expected_refused = (guild_id is None and not allow_dms) or (
        guild_id is not None and channel_id != ENABLED
    )
    assert (checked is not None) == expected_refused
    if guild_id is None and not allow_dms:
        assert checked == DMS_OFF
