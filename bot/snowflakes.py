"""What a Discord id (a snowflake) says of when Discord made it, and how far Easel's clock may
stand from Discord's when the two are compared."""

from __future__ import annotations

# Discord's epoch (2015-01-01) in milliseconds: a snowflake's high bits count from it.
DISCORD_EPOCH_MS = 1_420_070_400_000
# How far Easel's clock may run ahead of or behind Discord's: a comparison of a snowflake's
# time with Easel's clock allows this much either way (``bot.unheard_deletions``,
# ``cogs.results.earlier_posts``). A host clock off by more breaks those: ``bot.metrics``
# warns of one off either way.
CLOCK_SLACK_S = 60.0


def made_at(snowflake: int) -> float:
    """When Discord made the message or interaction (seconds since the epoch, Discord's clock):
    its id's."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


def made_before(seconds: float) -> int:
    """The lowest snowflake Discord makes at ``seconds`` (since the epoch): every id below it
    was made before then."""
    return (round(seconds * 1000) - DISCORD_EPOCH_MS) << 22
