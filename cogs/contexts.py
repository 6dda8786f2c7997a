"""Where the commands may be used: servers always, direct messages only when the operator
allows them (EASEL_ALLOW_DMS), group DMs never.

Discord hides a command from the places its registered ``contexts`` leave out; the tree checks
again on arrival, because a stale registration (global commands take up to an hour to update)
can still deliver a command from a DM after the operator turned DMs off.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands


def command_contexts(*, allow_dms: bool) -> app_commands.AppCommandContext:
    """The contexts to register commands with; ``allow_dms=False`` is servers only."""
    return app_commands.AppCommandContext(guild=True, dm_channel=allow_dms, private_channel=False)


class EaselCommandTree(app_commands.CommandTree[Any]):
    """Refuses a command invoked where its contexts do not allow it, whatever Discord sent;
    tells the bot's ``acknowledge_first`` (bot.acknowledge_first) of each command as it arrives."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.type is discord.InteractionType.application_command:
            self.client.acknowledge_first.received(interaction.id)
        if interaction.guild_id is not None or self._allows_dm(interaction):
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            return False  # an autocomplete can only answer with choices: offer none
        raise app_commands.NoPrivateMessage()

    def _allows_dm(self, interaction: discord.Interaction[Any]) -> bool:
        contexts = self.allowed_contexts
        command = interaction.command
        # A subcommand is registered (with its contexts) as part of its top-level group.
        root = getattr(command, "root_parent", None) or command
        if root is not None and root.allowed_contexts is not None:
            contexts = contexts.merge(root.allowed_contexts)
        return interaction.context.dm_channel and contexts.dm_channel
