"""What Discord's command picker shows a member: every option says what it is for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.e2e.helpers import StartEasel
from tests.fake_discord import FakeDiscord

# discord.py's description for an option that was given none.
NO_DESCRIPTION = "…"


def options_of(command: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for option in command.get("options") or []:
        label = f"{path} {option['name']}"
        yield label, option
        yield from options_of(option, label)


async def test_every_option_is_described(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        commands = fake_discord.registered_commands(guild=True)
    undescribed = [
        label
        for command in commands
        for label, option in options_of(command, f"/{command['name']}")
        if option.get("description", NO_DESCRIPTION) == NO_DESCRIPTION
    ]
    assert commands and undescribed == []
