"""Discord's snowflake clock as the bot hands it to ``db.jobs.first_posts_in`` (db imports no
bot, so its caller passes them)."""

from __future__ import annotations

from bot.snowflakes import CLOCK_SLACK_S, DISCORD_EPOCH_MS

SNOWFLAKE_CLOCK = {"discord_epoch_ms": DISCORD_EPOCH_MS, "clock_slack_s": CLOCK_SLACK_S}
