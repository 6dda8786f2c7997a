"""/help is one message: every helper that documents a feature there spends the same 2,000."""

from __future__ import annotations

from cogs.info import HELP_TEXT, MESSAGE_LIMIT


def test_help_fits_one_discord_message() -> None:
    assert len(HELP_TEXT) <= MESSAGE_LIMIT, f"/help is {len(HELP_TEXT)} characters"
