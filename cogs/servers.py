"""Which Discord servers Easel serves (EASEL_ALLOWED_SERVERS), at the gateway: a server that
adds the bot while the operator lists others is left at once (also one Discord reported
unavailable as it joined, once it is available); those it is in at READY are named, once a
process (not again at each new gateway session), never left; and a public application with no
list is named at the start. The interactions of a server left out are refused in
``cogs.contexts``, wherever they come from; its jobs queued before are ended at the queue's
start (``bot.jobs.queue.JobQueue.start``).

Why READY never leaves: a typo in the setting would then take Easel out of every server it
serves, and only each server's admins could add it back. Refused and named there, the operator
fixes the setting and restarts; a server that adds the bot while running has just invited it,
and can invite it again.
"""

from __future__ import annotations

import logging

import discord
from discord.ext import commands

from bot.settings import Settings
from cogs.visibility import DISCORD_FAILED

log = logging.getLogger(__name__)


class AllowedServersCog(commands.Cog):
    def __init__(self, bot: commands.Bot, settings: Settings) -> None:
        self._bot = bot
        self._settings = settings
        self._allowed = settings.allowed_servers  # empty: every server
        # The servers and listed ids named in a warning already (``on_ready``): once a process.
        self._named: set[int] = set()
        # The servers the latest READY listed (``on_connect``): refused there, never left.
        self._in_at_ready: frozenset[int] = frozenset()

    async def cog_load(self) -> None:
        # discord.py read the application at login (``Client.application``), before this hook.
        application = self._bot.application
        if application is not None and application.bot_public and not self._allowed:
            log.warning(
                "the Discord application is public: anyone can add Easel to a server they "
                "own and render on its devices; turn off Public Bot (Developer Portal, the "
                "application's Bot page), or list the servers Easel serves in "
                "EASEL_ALLOWED_SERVERS"
            )

    @commands.Cog.listener()
    async def on_connect(self) -> None:
        """A READY (a new gateway session): discord.py has just cached the servers it lists,
        before their GUILD_CREATEs (each an ``on_guild_available``) and ``on_ready``."""
        self._in_at_ready = frozenset(guild.id for guild in self._bot.guilds)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Names each server left out that Easel is in, and each listed id it is not in, the
        first READY that finds it so: a new gateway session (an INVALID_SESSION, then a new
        IDENTIFY) finds the same, and the log is not repeated for it."""
        if not self._allowed:
            return
        present = {guild.id for guild in self._bot.guilds}
        for guild_id in sorted(present - self._allowed - self._named):
            log.warning(
                "Easel is in server %s, which is not in EASEL_ALLOWED_SERVERS: its commands "
                "and clicks are refused; add it to the setting, or remove the bot there",
                guild_id,
            )
        if missing := self._allowed - present - self._named:
            log.warning(
                "EASEL_ALLOWED_SERVERS names servers Easel is not in: %s (a typo?)",
                ", ".join(map(str, sorted(missing))),
            )
        self._named |= (present - self._allowed) | missing

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._leave_unless_served(guild)

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        """A server's GUILD_CREATE after it was unavailable: the end of an outage, or a server
        that added Easel while Discord reported it unavailable (its join's GUILD_CREATE said
        only that, and discord.py announced no join). The latter is one the latest READY did
        not list: left as any server that adds Easel while it runs."""
        if guild.id not in self._in_at_ready:
            await self._leave_unless_served(guild)

    async def _leave_unless_served(self, guild: discord.Guild) -> None:
        if self._settings.serves_server(guild.id):
            return
        log.warning(
            "Easel was added to server %s, which is not in EASEL_ALLOWED_SERVERS: leaving it",
            guild.id,
        )
        try:
            await guild.leave()
        except DISCORD_FAILED as failure:
            log.warning(
                "could not leave server %s (%s): its commands and clicks are refused",
                guild.id,
                failure,
            )
