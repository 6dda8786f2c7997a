"""A job whose result, public progress message (its previews) or /show or U1-U4 post is
deleted in Discord is withdrawn: members cannot delete Easel's messages, so in a server that
is a moderator's doing (its maker's own Delete button unlinks that post first:
``cogs.results.buttons.DeleteButton``). So is a job posted or queued in a channel or thread
that is deleted, or in a thread of a deleted channel (Discord announces none of its messages'
deletions); such a deletion withdraws no other job with the same pixels. Withdrawn jobs'
pictures are not shown or used again (``GuildPolicy.check_reuse``), and an unfinished one's
result is posted nowhere."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import discord
from discord.ext import commands

from bot.history import History

log = logging.getLogger(__name__)


def thread_parent(client: discord.Client, channel_id: int) -> int | None:
    """The channel of a thread Easel sees (None: not a thread, or not seen): a post in the
    thread goes with that channel, whose deletion Discord announces for no archived thread."""
    channel = client.get_channel(channel_id)
    return channel.parent_id if isinstance(channel, discord.Thread) else None


class WithdrawalsCog(commands.Cog):
    """Listens for raw message deletions (the guild messages intent, not a privileged one) and
    channel and thread deletions (the guilds intent)."""

    def __init__(self, history: History, forget_channel: Callable[[int, int], None]) -> None:
        """``forget_channel(guild_id, channel_id)``: told of every deleted channel and thread,
        so that what Discord said of it before (``DiscordServerAdmins``) is not used again."""
        self._history = history
        self._forget_channel = forget_channel

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, [payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, payload.message_ids)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        # Its threads go with it (``job_messages.parent_id``): Discord announces only those
        # discord.py still caches, never an archived one.
        await self._withdraw_channel(channel.guild.id, channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self._withdraw_channel(payload.guild_id, payload.thread_id)

    async def _withdraw_channel(self, guild_id: int, channel_id: int) -> None:
        self._forget_channel(guild_id, channel_id)
        for job_id in await self._history.withdraw_deleted_channel(guild_id, channel_id):
            log.info("job %s withdrawn: the channel it was posted in was deleted", job_id)

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
