"""Small helpers every cog shares: the bot's services and one-sentence ephemeral replies."""

from __future__ import annotations

from typing import Any, Protocol, cast

import discord

from bot.services import Services


class HasServices(Protocol):
    services: Services


def services_of(interaction: discord.Interaction[Any]) -> Services:
    """The services of the bot that received this interaction (see bot.app.EaselBot)."""
    return cast(HasServices, interaction.client).services


async def tell(interaction: discord.Interaction[Any], message: str) -> None:
    """An ephemeral message to the member, whether or not the interaction was answered yet."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)
