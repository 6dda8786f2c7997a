"""A member banned, kicked or timed out in a server has their unfinished jobs there cancelled
(``bot.bans``). Discord says so through the moderation intent (not a privileged intent): a ban
as GUILD_BAN_ADD (an unban as GUILD_BAN_REMOVE); a kick, and a timeout given or removed, only
as GUILD_AUDIT_LOG_ENTRY_CREATE, which Discord sends only where Easel has View Audit Log (an
AutoMod timeout too, as its own action naming no end). Easel removed from a server has the
jobs of all its members there cancelled (GUILD_DELETE, not an outage's). At start-up, Discord
is asked about each member with restored work, in the background (``start_restored_checks``);
after a gateway gap Discord did not resume, about each member with unfinished or undelivered
work (``on_ready``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.bans import MemberStops, Standing, StopCause

if TYPE_CHECKING:  # discord.types imports itself in a circle at run time
    from discord.types.guild import Guild as GuildPayload
    from discord.types.member import MemberWithUser as MemberPayload

# Discord's JSON error codes of a 404: "Unknown Member", "Unknown Guild".
UNKNOWN_MEMBER = 10007
UNKNOWN_GUILD = 10004
ADMINISTRATOR = discord.Permissions(administrator=True).value


class BansCog(commands.Cog):
    def __init__(self, stops: MemberStops, client: discord.Client) -> None:
        self._stops = stops
        self._client = client
        self._ready_before = False  # the first READY follows the start's own check

    @commands.Cog.listener()
    async def on_member_ban(
        self, guild: discord.Guild, user: discord.User | discord.Member
    ) -> None:
        # The audit names Easel as the one who cancelled (its own member is always cached).
        await self._stops.cancel_jobs(guild.id, user.id, StopCause.BAN, easel_id=guild.me.id)

    @commands.Cog.listener()
    async def on_member_unban(self, guild: discord.Guild, user: discord.User) -> None:
        self._stops.may_work_again(guild.id, user.id)

    @commands.Cog.listener()
    async def on_audit_log_entry_create(self, entry: discord.AuditLogEntry) -> None:
        """Kicks, and timeouts given or removed (a member update whose change names
        ``timed_out_until``; other member updates, a nickname say, are not ours), and AutoMod's
        timeouts (their entry names no end: Discord is asked for it)."""
        target = entry.target  # for these actions: the member, or an Object when uncached
        if not isinstance(target, discord.Member | discord.User | discord.Object):
            return
        guild = entry.guild
        if entry.action is discord.AuditLogAction.kick:
            await self._stops.cancel_jobs(guild.id, target.id, StopCause.KICK, easel_id=guild.me.id)
        elif entry.action is discord.AuditLogAction.automod_timeout_member:
            await self._stops.cancel_for_automod_timeout(
                guild.id, target.id, self.standing, easel_id=guild.me.id
            )
        elif entry.action is discord.AuditLogAction.member_update and hasattr(
            entry.after, "timed_out_until"
        ):
            until: datetime | None = entry.after.timed_out_until
            if until is None or until <= discord.utils.utcnow():
                self._stops.may_work_again(guild.id, target.id)  # removed early
                return
            await self._stops.cancel_jobs(
                guild.id,
                target.id,
                StopCause.TIMEOUT,
                easel_id=guild.me.id,
                until=until.timestamp(),
            )

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """Easel was removed from the server, or it was deleted (GUILD_DELETE; an outage's
        is ``unavailable`` and discord.py says "guild_unavailable" instead): its jobs are
        cancelled, refunded, and take no more turns on the devices the other servers share."""
        assert self._client.user is not None  # a gateway event comes once logged in
        await self._stops.cancel_server_jobs(guild.id, easel_id=self._client.user.id)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """A READY after the first: Discord did not resume the session (INVALID_SESSION, then
        a new IDENTIFY), and sends none of the gap's bans, kicks or audit-log entries (a
        RESUMED replays them: nothing to do). The members with unfinished or undelivered work
        are asked about as at start-up (``MemberStops.start_session_checks``)."""
        if not self._ready_before:
            self._ready_before = True
            return
        assert self._client.user is not None  # a READY comes once logged in
        self._stops.start_session_checks(self.standing, easel_id=self._client.user.id)

    async def start_restored_checks(self) -> None:
        """For ``JobQueue.start``: after login, before the gateway connects; the members are
        asked about in the background meanwhile (fetched by ids over REST: no guild may be
        cached yet)."""
        assert self._client.user is not None  # logged in: setup_hook runs after login
        await self._stops.start_restored_checks(self.standing, easel_id=self._client.user.id)

    async def standing(self, guild_id: int, user_id: int) -> Standing:
        """GET /guilds/{guild}/members/{user}: 404 Unknown Member is a clear "gone", 404
        Unknown Guild a clear "server gone"; any other error (403 Missing Access, an outage)
        is raised, and the jobs stay. A timeout in force binds unless the member is the
        owner or an administrator, whom Discord exempts though they keep its date (timed out,
        then made an admin): GET /guilds/{guild} tells (asked only of a member in a timeout;
        its failure is raised too)."""
        try:
            member = await self._client.http.get_member(guild_id, user_id)
        except discord.NotFound as missing:
            if missing.code == UNKNOWN_MEMBER:
                return Standing(gone=True)
            if missing.code == UNKNOWN_GUILD:
                return Standing(server_gone=True)
            raise
        until = discord.utils.parse_time(member.get("communication_disabled_until"))
        if until is None or until <= discord.utils.utcnow():
            return Standing()
        if is_exempt_from_timeouts(member, await self._client.http.get_guild(guild_id)):
            return Standing()
        return Standing(timed_out_until=until.timestamp())


def is_exempt_from_timeouts(member: MemberPayload, guild: GuildPayload) -> bool:
    """Whether a member (Discord's member payload) is the guild's (its payload) owner or holds
    Administrator through a role or @everyone (whose role id is the guild's)."""
    user_id = int(member["user"]["id"])
    if int(guild["owner_id"]) == user_id:
        return True
    held = {int(role_id) for role_id in member["roles"]} | {int(guild["id"])}
    return any(
        int(role["id"]) in held and int(role["permissions"]) & ADMINISTRATOR
        for role in guild["roles"]
    )
