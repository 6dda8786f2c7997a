"""What counts as a result picture in a message the fake Discord stored. Apart from the e2e
helpers so that the fake's own process in ``benchmarks/interactions.py`` can use it without
importing the bot."""

from __future__ import annotations

from tests.fake_discord import StoredMessage


def has_picture(message: StoredMessage) -> bool:
    """A result picture is attached (not just the progress message's preview, spoilered or not)."""
    return any(
        attachment.filename.removeprefix("SPOILER_") != "preview.jpg"
        for attachment in message.attachments
    )
