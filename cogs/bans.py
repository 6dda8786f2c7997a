"""A member banned from a server has their unfinished jobs there cancelled (``bot.bans``);
Discord says so through the moderation intent (GUILD_BAN_ADD, not a privileged intent), and
of an unban too (GUILD_BAN_REMOVE)."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.bans import BannedMembers


class BansCog(commands.Cog):
    def __init__(self, banned: BannedMembers) -> None:
        self._banned = banned

    @commands.Cog.listener()
    async def on_member_ban(
        self, guild: discord.Guild, user: discord.User | discord.Member
    ) -> None:
        # The audit names Easel as the one who cancelled (its own member is always cached).
        await self._banned.cancel_jobs(guild.id, user.id, easel_id=guild.me.id)

    @commands.Cog.listener()
    async def on_member_unban(self, guild: discord.Guild, user: discord.User) -> None:
        self._banned.unbanned(guild.id, user.id)
