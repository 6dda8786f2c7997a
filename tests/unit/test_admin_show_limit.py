"""/easel-admin show on a busy server: the shortened reply stays within Discord's 2,000
characters with every list full and the View Audit Log note shown."""

from __future__ import annotations

from bot.policy.guild import GuildList, GuildSettings
from bot.policy.moderation import BANNED_WORD_MAX_LENGTH
from cogs.admin import describe_guild, describe_guild_within
from cogs.common import MESSAGE_LIMIT

AUDIT_NOTE = "\nkicks and timeouts: not seen (grant Easel the View Audit Log permission)"


def _every_list_full() -> GuildSettings:
    def names(prefix: str, count: int) -> frozenset[str]:
        return frozenset(f"{prefix}-{index:03d}-with-a-longer-file-name" for index in range(count))

    lists = {which: names(which.value, 40) for which in GuildList}
    lists[GuildList.ALLOWED_CHANNEL] = frozenset(str(10**18 + n) for n in range(30))
    lists[GuildList.PRIORITY_ROLE] = frozenset(str(10**18 + n) for n in range(30))
    lists[GuildList.BANNED_WORD] = frozenset(
        f"{n:03d}".ljust(BANNED_WORD_MAX_LENGTH, "x") for n in range(500)
    )
    return GuildSettings(1, "model-000-with-a-longer-file-name", "spoiler", lists)


def test_show_with_every_list_full_fits_one_message_and_keeps_the_note() -> None:
    settings = _every_list_full()
    assert len(describe_guild(settings, None, 12, "other-model")) > MESSAGE_LIMIT
    shown = describe_guild_within(MESSAGE_LIMIT, settings, 12, "other-model", AUDIT_NOTE)
    assert len(shown) <= MESSAGE_LIMIT
    assert shown.endswith(AUDIT_NOTE)
    # The room is shared: every list still shows an entry, and says how many it left out.
    assert "<#1000000000000000000>" in shown
    assert "allowed_controlnet-000-with-a-longer-file-name" in shown
    assert shown.count("more (all in easel-settings.txt)") == len(GuildList)


def test_lists_that_fit_are_shown_whole_beside_a_long_one() -> None:
    settings = GuildSettings(
        1,
        None,
        "allow",
        {
            GuildList.ALLOWED_MODEL: frozenset({"sd15", "sdxl"}),
            GuildList.BANNED_WORD: frozenset(f"word{n:04d}" for n in range(400)),
        },
    )
    shown = describe_guild_within(MESSAGE_LIMIT, settings)
    assert len(shown) <= MESSAGE_LIMIT
    assert "allowed models: `sd15`, `sdxl` (— means every model)" in shown
    assert "||word0000||" in shown and "more (all in easel-settings.txt)" in shown
