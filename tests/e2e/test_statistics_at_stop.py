"""A stop leaves SQLite's planner statistics of what the bot queried (``sqlite_stat1``), as
SQLite advises at a connection's close: the next start's commands are planned with them."""

from __future__ import annotations

from bot.settings import Settings
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import imagine, reply_to
from tests.fake_discord import FakeDiscord
from tests.integration.test_planner_statistics import analysed_tables


async def test_a_stop_leaves_statistics_of_the_tables_the_bot_queried(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    async with start_easel():
        await imagine(fake_discord, "a lighthouse")
        await reply_to(fake_discord, "cancel")  # plain /cancel: nothing left to cancel

    assert {"jobs", "images", "quota_ledger"} <= analysed_tables(
        easel_settings_for_test.database_path
    )
