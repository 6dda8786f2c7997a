"""A job whose result, public progress message (its previews) or /show or U1-U4 post is
deleted in Discord is withdrawn: members cannot delete Easel's messages, so in a server that
is a moderator's doing (its maker's own Delete button unlinks that post first:
``cogs.results.buttons.DeleteButton``). Withdrawn jobs' pictures are not shown or used again
(``GuildPolicy.check_reuse``), and an unfinished one's result is posted nowhere."""

from __future__ import annotations

import logging
from collections.abc import Collection

import discord
from discord.ext import commands

from bot.history import History

log = logging.getLogger(__name__)


class WithdrawalsCog(commands.Cog):
    """Listens for raw message deletions (the guild messages intent, not a privileged one)."""

    def __init__(self, history: History) -> None:
        self._history = history

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, [payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, payload.message_ids)

    async def _withdraw(
        self, guild_id: int | None, channel_id: int, message_ids: Collection[int]
    ) -> None:
        if guild_id is None:  # a direct message: no moderator deletes there
            return
        # Only a job's post in the server and channel it was posted in matches; any other deletion
        # (a member's message) changes nothing, unless Easel records it as a post in a moment
        # (``History.withdraw_deleted`` remembers it a while).
        for job_id in await self._history.withdraw_deleted(guild_id, channel_id, message_ids):
            log.info("job %s withdrawn: its result was deleted in Discord", job_id)
