"""Reading a message on a member's behalf: only from where they are and what they can read
(the decisions are in bot.policy.visibility; this is the discord.py glue)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.bans import timed_out_refusal
from bot.downloads import DownloadFailed, fetch_picture
from bot.policy.moderation import check_age_restriction_kept
from bot.policy.visibility import (
    DISCORD_CDN_ORIGINS,
    NOT_READABLE,
    NOT_YOURS_TO_CLICK,
    ChannelAccess,
    Place,
    PostingRights,
    RecentThreadMembers,
    ThreadMembershipUnknown,
    check_may_act,
    check_member_may_read,
    check_same_place,
    locate_attachment,
    locate_message,
    must_ask_thread_membership,
    why_may_not_act,
)
from bot.user_errors import Reason, UserError

if TYPE_CHECKING:
    from cogs.common import HasServices

log = logging.getLogger(__name__)

# What a call to Discord raises when it fails: an error answer, or (after discord.py's own
# retries) a connection that broke or timed out. A check that needed the answer fails closed.
DISCORD_FAILED = (discord.HTTPException, OSError, aiohttp.ClientError)
# Asking Discord what a channel is: also a channel type unknown here (``made_age_restricted``).
CHANNEL_CHECK_FAILED = (*DISCORD_FAILED, discord.InvalidData)
# Each ask of Discord about a channel, at most, by default: /show answers within Discord's 3 s (a
# ``TimeoutError`` is an ``OSError``: one of ``CHANNEL_CHECK_FAILED``).
CHANNEL_FETCH_TIMEOUT_S = 1.0


def _place_of(interaction: discord.Interaction[Any]) -> Place:
    return Place(interaction.guild_id, interaction.channel_id)


def _thread_members_of(interaction: discord.Interaction[Any]) -> RecentThreadMembers:
    return cast("HasServices", interaction.client).services.thread_members


# Asking Discord what a channel is, while it does not answer: the member is told to try again.
_CHANNEL_UNANSWERED = (
    "Discord did not say whether you can read that channel; try again in a moment."
)

GuildChannelLike = discord.abc.GuildChannel | discord.Thread
# A channel Discord refuses to show Easel (403: Easel was removed from a private thread, or lost
# View Channel there): Easel's sight is lost, not the member's, whatever they may read there.
EASEL_LOST_SIGHT = (
    "Easel can no longer see that channel or thread, so it cannot check that you may read it."
)


class HiddenFromEasel(Exception):
    """Discord answered that Easel may not see the channel (``guild_channel``); with
    ``made_age_restricted``, whether the hidden thread's channel makes its pictures
    age-restricted (``age_restricted``)."""

    def __init__(self, channel_id: int, *, age_restricted: bool = False) -> None:
        super().__init__(channel_id)
        self.age_restricted = age_restricted


async def guild_channel(
    client: discord.Client,
    guild: discord.Guild | None,
    guild_id: int,
    channel_id: int,
    timeout_s: float = CHANNEL_FETCH_TIMEOUT_S,
) -> tuple[GuildChannelLike | None, bool]:
    """The server's channel from discord.py's cache, or else asked of Discord (one call within
    ``timeout_s``): the cache drops a thread once it is archived. None: gone
    or another server's. With it, whether Discord was asked (a fetched thread's parent comes
    from the cache: its permissions and age restriction are its parent's). Raises
    ``HiddenFromEasel`` when Discord refuses Easel the channel, and one of
    ``CHANNEL_CHECK_FAILED`` while Discord does not answer."""
    cached = None if guild is None else guild.get_channel_or_thread(channel_id)
    if cached is not None:
        return cached, False
    try:
        channel = await _fetched_channel(client, channel_id, timeout_s)
    except discord.NotFound:
        return None, True
    except discord.Forbidden:
        raise HiddenFromEasel(channel_id) from None
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None, True
    return (channel if channel.guild.id == guild_id else None), True


async def _check_member_may_read(
    interaction: discord.Interaction[Any],
    channel_id: int,
    refusal: str = NOT_READABLE,
    *,
    restricted_when_made: bool = False,
    hidden_refusal: str = EASEL_LOST_SIGHT,
) -> GuildChannelLike | None:
    """View Channel + Read Message History from the server's cached roles and overwrites (in
    a private thread, membership too), and from an age-restricted channel (or a job's picture
    made in one: ``restricted_when_made``) only into another; ``refusal`` is the sentence a
    member who may not read there gets. A channel the cache lacks (an archived thread) is
    asked of Discord (``guild_channel``); while Discord does not answer, the member is told
    to try again; one Discord hides from Easel is refused with ``hidden_refusal``. Returns
    the channel when Discord was asked for it, for a later check of the same command to reuse
    (None: the cache held it).

    In a DM, ``check_same_place`` has already kept the message to the member's own DM.
    """
    if interaction.guild_id is None:
        return None
    member = interaction.user
    if not isinstance(member, discord.Member):
        check_member_may_read(ChannelAccess(False, False, False), refusal)
        return None
    try:
        channel, fetched = await guild_channel(
            interaction.client, interaction.guild, interaction.guild_id, channel_id
        )
    except CHANNEL_CHECK_FAILED as failed:
        log_discord_failed(f"what channel {channel_id} is (may member {member.id} read it)", failed)
        raise UserError(_CHANNEL_UNANSWERED, Reason.DISCORD) from None
    except HiddenFromEasel:
        raise UserError(hidden_refusal, Reason.CHANNEL) from None
    if channel is None:
        check_member_may_read(ChannelAccess(False, False, False), refusal)
        return None
    permissions = _permissions_in(channel, member)
    check_member_may_read(
        ChannelAccess(True, permissions.view_channel, permissions.read_message_history), refusal
    )
    await _check_thread_member(
        interaction, channel, permissions, refusal=refusal, hidden_refusal=hidden_refusal
    )
    # What Easel makes of the picture is posted here: it stays in age-restricted channels.
    check_age_restriction_kept(
        source_age_restricted=is_age_restricted_picture(
            channel, restricted_when_made=restricted_when_made
        ),
        here_age_restricted=is_age_restricted(interaction.channel),
    )
    return channel if fetched else None


def _permissions_in(
    channel: discord.abc.GuildChannel | discord.Thread, member: discord.Member
) -> discord.Permissions:
    """The member's permissions there; none in a thread whose parent is not in discord.py's
    cache (its permissions cannot be worked out: it counts as unreadable)."""
    try:
        return channel.permissions_for(member)
    except discord.ClientException:
        return discord.Permissions.none()


async def moderated_channels(
    interaction: discord.Interaction[Any], channel_ids: Iterable[int | None]
) -> set[int]:
    """Of ``channel_ids`` (channels and threads of the interaction's server), those where the
    member has Manage Messages by Discord's reckoning: for the interaction's own channel,
    Discord's (``interaction.permissions``, as the Delete button reads it); for the others,
    worked out from the server's cache (a thread by its parent), one the cache lacks (an
    archived thread) asked of Discord (``guild_channel``), and a private thread only if they
    see it (``member_may_see``: a member of it, or Manage Threads). One that is gone, hidden
    from Easel, or not answered for counts as not moderated: a moderator's power fails
    closed."""
    member = interaction.user
    if interaction.guild_id is None or not isinstance(member, discord.Member):
        return set()
    moderated: set[int] = set()
    for channel_id in set(channel_ids):
        if channel_id is None:
            continue
        if channel_id == interaction.channel_id:
            if interaction.permissions.manage_messages:
                moderated.add(channel_id)
            continue
        try:
            channel, _ = await guild_channel(
                interaction.client, interaction.guild, interaction.guild_id, channel_id
            )
            if channel is None or not _permissions_in(channel, member).manage_messages:
                continue
            # A private thread's permissions are its parent's: also whether they see it.
            if not await member_may_see(channel, member, _thread_members_of(interaction)):
                continue
        except (*CHANNEL_CHECK_FAILED, HiddenFromEasel, ThreadMembershipUnknown) as failed:
            log_discord_failed(f"whether member {member.id} moderates {channel_id}", failed)
            continue
        moderated.add(channel_id)
    return moderated


def log_discord_failed(asked: str, failed: BaseException) -> None:
    """Tell the operator, once per failure, that a check's question to Discord (``asked``:
    ids only, nothing a member wrote) got no answer it could use: the check failed closed (a
    member refused and told to try again, or a channel left out of an admin's dashboard).
    The failure by its type and Discord's status and error code only: an aiohttp error's
    ``repr`` carries the request's headers (the bot's token), an ``HTTPException``'s the whole
    answer."""
    log.warning("Discord failed to say %s (%s); the check failed closed", asked, _named(failed))


def _named(failed: BaseException) -> str:
    """``failed``'s type, with the HTTP status and Discord's error code where it has them."""
    told = [type(failed).__name__]
    status = getattr(failed, "status", None)  # aiohttp's errors' and discord.py's
    if isinstance(status, int):
        told.append(f"status {status}")
    if isinstance(failed, discord.HTTPException):  # (aiohttp's ``code`` is its status again)
        told.append(f"code {failed.code}")
    return ", ".join(told)


async def _check_thread_member(
    interaction: discord.Interaction[Any],
    channel: object,
    permissions: discord.Permissions,
    *,
    refusal: str,
    hidden_refusal: str,
) -> None:
    """In a private thread, the interacting member must be in it (``_thread_membership``):
    ``refusal`` when Discord says they are not, ``hidden_refusal`` when Discord refuses Easel
    the thread (Easel's sight lost, not the member's), ``ThreadMembershipUnknown`` while it
    does not answer."""
    try:
        thread_member = await _thread_membership(
            channel, interaction.user.id, permissions, _thread_members_of(interaction)
        )
    except HiddenFromEasel:
        raise UserError(hidden_refusal, Reason.CHANNEL) from None
    check_member_may_read(ChannelAccess(True, True, True, thread_member), refusal)


async def _thread_membership(
    channel: object, member_id: int, permissions: discord.Permissions, recent: RecentThreadMembers
) -> bool:
    """Whether a private thread counts the member in (any other channel: yes). Its
    ``permissions`` are its parent's, in discord.py's cache and in an interaction's, so whether
    the member was added to it is asked of Discord (a "yes" is remembered in ``recent``);
    raises ``HiddenFromEasel`` when Discord refuses Easel the thread. While Discord or the
    network to it fails (or does not answer within ``CHANNEL_FETCH_TIMEOUT_S``), the member
    is refused too, but told so: ``ThreadMembershipUnknown``."""
    if not isinstance(channel, discord.Thread) or not must_ask_thread_membership(
        private_thread=channel.is_private(), manage_threads=permissions.manage_threads
    ):
        return True
    if recent.is_member(channel.id, member_id, time.monotonic()):
        return True
    try:
        async with asyncio.timeout(CHANNEL_FETCH_TIMEOUT_S):
            await channel.fetch_member(member_id)
    except discord.NotFound:  # not a member
        return False
    except discord.Forbidden:
        raise HiddenFromEasel(channel.id) from None
    except DISCORD_FAILED as failed:  # a 5xx, no answer
        log_discord_failed(f"whether member {member_id} is in private thread {channel.id}", failed)
        raise ThreadMembershipUnknown from None
    recent.remember(channel.id, member_id, time.monotonic())
    return True


async def member_may_see(
    channel: discord.abc.GuildChannel | discord.Thread,
    member: discord.Member,
    recent: RecentThreadMembers,
) -> bool:
    """View Channel there, and in a private thread membership (or Manage Threads); raises
    ``HiddenFromEasel`` when Discord refuses Easel the thread (Easel's sight lost, not the
    member's: the caller says so) and ``ThreadMembershipUnknown`` while Discord cannot say."""
    permissions = _permissions_in(channel, member)
    return permissions.view_channel and await _thread_membership(
        channel, member.id, permissions, recent
    )


async def member_may_read(
    channel: discord.abc.GuildChannel | discord.Thread,
    member: discord.Member,
    recent: RecentThreadMembers,
) -> bool:
    """``member_may_see`` and Read Message History: the member may read what was posted there."""
    return _permissions_in(channel, member).read_message_history and await member_may_see(
        channel, member, recent
    )


_THREAD_TYPES = frozenset(
    {
        discord.ChannelType.public_thread,
        discord.ChannelType.private_thread,
        discord.ChannelType.news_thread,
    }
)


def _posting_rights(permissions: discord.Permissions, channel: object) -> PostingRights:
    in_thread = getattr(channel, "type", None) in _THREAD_TYPES
    return PostingRights(
        use_application_commands=permissions.use_application_commands,
        send_messages=(
            permissions.send_messages_in_threads if in_thread else permissions.send_messages
        ),
        attach_files=permissions.attach_files,
        in_thread=in_thread,
    )


def check_member_may_act_here(
    interaction: discord.Interaction[Any], *, private: bool, text_only: bool = False
) -> None:
    """What a member's command, click or form makes is posted where they are: only where they
    may use application commands and, unless it is ``private`` (ephemeral), post pictures (or
    messages, for an answer of ``text_only``: ``bot.policy.visibility.why_may_not_act``), by
    Discord's reckoning for the interaction in its channel (overwrites and a timeout
    included). In a DM nothing is asked. A member in a timeout is refused first, saying until
    when: nothing is made or posted for them there, private results included."""
    if interaction.guild_id is not None:
        if (refusal := _timed_out_refusal(interaction.user, interaction.permissions)) is not None:
            raise UserError(refusal, Reason.PERMISSION)
        rights = _posting_rights(interaction.permissions, interaction.channel)
        check_may_act(rights, private=private, text_only=text_only)


def why_member_may_not_act_in(
    channel: discord.abc.GuildChannel | discord.Thread, member: discord.Member, *, private: bool
) -> str | None:
    """``check_member_may_act_here`` from the server's cache (a fetched member's timeout
    included), for the mask editor's page: the refusal, or None."""
    permissions = _permissions_in(channel, member)
    if (refusal := _timed_out_refusal(member, permissions)) is not None:
        return refusal
    rights = _posting_rights(permissions, channel)
    return why_may_not_act(rights, private=private)


def _timed_out_refusal(
    user: discord.User | discord.Member, permissions: discord.Permissions
) -> str | None:
    """Discord's timeout as the member's payload tells it (``communication_disabled_until``),
    unless the member has Administrator there (``permissions``; the owner's are all): Discord
    exempts them, though one timed out and then made an admin keeps the date."""
    if isinstance(user, discord.Member) and user.is_timed_out() and not permissions.administrator:
        assert user.timed_out_until is not None  # is_timed_out: set, and in the future
        return timed_out_refusal(user.timed_out_until)
    return None


def is_age_restricted(channel: object) -> bool:
    """Whether a channel is age-restricted (a thread: its parent; a DM or unknown: no)."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def thread_parent(channel: object) -> int | None:
    """The channel a thread or forum post belongs to (its place on a server's channel list is
    that channel's); None: not a thread."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def parent_unseen(channel: object) -> bool:
    """Whether ``channel`` is a thread whose channel Easel may not view: Discord hides such a
    channel's fields from Easel (its age restriction among them), so the thread's pictures
    count as made in an age-restricted one."""
    return isinstance(channel, discord.Thread) and not _easel_views(channel.parent)


def _easel_views(channel: discord.abc.GuildChannel | None) -> bool:
    """Whether Easel may view ``channel``, as the cache says (not cached: no)."""
    me = None if channel is None else channel.guild.me
    return channel is not None and me is not None and channel.permissions_for(me).view_channel


async def check_enabled_here(interaction: discord.Interaction[Any]) -> None:
    """``UserError`` unless Easel works where ``interaction`` was made
    (``GuildPolicy.check_channel``): a thread or forum post is enabled with its channel."""
    policy = cast("HasServices", interaction.client).services.guild_policy
    parent = thread_parent(interaction.channel)
    await policy.check_channel(interaction.guild_id, interaction.channel_id, parent)


async def thread_parent_of(
    client: discord.Client, guild_id: int, channel_id: int, timeout_s: float
) -> int | None:
    """``thread_parent`` of a server's channel by its id (``guild_channel``: an archived
    thread, a delivery at start-up are asked of Discord); None: not a thread, gone, or hidden
    from Easel. Raises one of ``CHANNEL_CHECK_FAILED`` while Discord does not answer (within
    ``timeout_s``): a delivery is tried again, not refused for it."""
    try:
        channel, _ = await guild_channel(
            client, client.get_guild(guild_id), guild_id, channel_id, timeout_s
        )
    except HiddenFromEasel:
        return None
    return thread_parent(channel)


def is_age_restricted_picture(channel: object, *, restricted_when_made: bool) -> bool:
    """The rule for a server's job's pictures: age-restricted when the job was made in an
    age-restricted channel (journaled at submit: ``restricted_when_made``) or when the channel
    it was made in is one now. A moderator turning the flag off does not free what was made
    under it; turning it on restricts what was made before."""
    return restricted_when_made or is_age_restricted(channel)


async def made_age_restricted(
    client: discord.Client,
    guild_id: int,
    channel_id: int | None,
    *,
    restricted_when_made: bool,
    timeout_s: float = CHANNEL_FETCH_TIMEOUT_S,
    fetched: object | None = None,
    hidden_is_restricted: bool = True,
    thread_parent_id: int | None = None,
) -> bool:
    """Whether a server's job's pictures are age-restricted (``is_age_restricted_picture``):
    made in an age-restricted channel (its journaled flag, ``restricted_when_made``), or made
    in a channel that is one now (a thread: its parent). A channel the gateway's cache does not
    hold (an archived thread, a result delivered at start-up before the cache is filled) is
    asked of Discord, its parent too unless the cache holds that; one that is gone counts as
    age-restricted, and one Discord hides from Easel (a private thread it was not added to)
    too, unless not ``hidden_is_restricted``: then ``HiddenFromEasel`` is raised (a job
    journaled as made outside one may go to its maker's direct messages, as neither /show nor
    its buttons bring it back there), saying whether the thread's channel
    (``thread_parent_id``, journaled at submit) is age-restricted now, gone, or hidden from
    Easel too (Discord does not show Easel such a channel's flag): then its pictures are
    (``HiddenFromEasel.age_restricted``). Raises one of ``CHANNEL_CHECK_FAILED`` when Discord does
    not answer what it is (within ``timeout_s`` each time: by default /show's, which answers
    within Discord's 3 s); a job journaled as age-restricted asks Discord nothing, nor one
    whose channel an earlier check of the same command ``fetched``."""
    if restricted_when_made or channel_id is None:
        return True
    guild = client.get_guild(guild_id)
    cached = None if guild is None else guild.get_channel_or_thread(channel_id)
    if cached is not None:
        return is_age_restricted(cached)
    try:
        channel = (
            fetched
            if fetched is not None
            else await _fetched_channel(client, channel_id, timeout_s)
        )
        if isinstance(channel, discord.Thread):  # an archived thread: the cache may hold its parent
            parent = None if guild is None else guild.get_channel(channel.parent_id)
            channel = (
                parent
                if parent is not None
                else await _fetched_channel(client, channel.parent_id, timeout_s)
            )
    except discord.NotFound:
        return True
    except discord.Forbidden:
        if hidden_is_restricted:
            return True
        restricted = await _parent_age_restricted(client, guild, thread_parent_id, timeout_s)
        raise HiddenFromEasel(channel_id, age_restricted=restricted) from None
    return is_age_restricted(channel)


async def _parent_age_restricted(
    client: discord.Client, guild: discord.Guild | None, parent_id: int | None, timeout_s: float
) -> bool:
    """Whether a hidden thread's channel (``parent_id``; None: not known) is age-restricted
    now, or one Easel may not view or that is gone: what it is, unknown, counts as one."""
    if parent_id is None:
        return False
    parent = None if guild is None else guild.get_channel(parent_id)
    if parent is not None:
        return is_age_restricted(parent) or not _easel_views(parent)
    try:
        return is_age_restricted(await _fetched_channel(client, parent_id, timeout_s))
    except (discord.NotFound, discord.Forbidden):
        return True


async def job_made_age_restricted(
    interaction: discord.Interaction[Any],
    channel_id: int | None,
    *,
    restricted_when_made: bool,
    fetched: object | None,
    asked_for: str,
    unanswered: str,
    hidden: str | None = None,
) -> bool:
    """``made_age_restricted`` for a job a server's command or click uses: while Discord does
    not answer, the member is told ``unanswered`` (``Reason.DISCORD``: try again) and the
    operator's log says what asked (``asked_for``: ids only); where Discord hides the channel
    from Easel, told ``hidden`` (None: it counts as age-restricted)."""
    assert interaction.guild_id is not None  # a server's
    try:
        return await made_age_restricted(
            interaction.client,
            interaction.guild_id,
            channel_id,
            restricted_when_made=restricted_when_made,
            fetched=fetched,
            hidden_is_restricted=hidden is None,
        )
    except HiddenFromEasel:
        assert hidden is not None  # raised only then
        raise UserError(hidden) from None
    except CHANNEL_CHECK_FAILED as failed:
        log_discord_failed(f"what channel {channel_id} is ({asked_for})", failed)
        raise UserError(unanswered, Reason.DISCORD) from None


async def _fetched_channel(
    client: discord.Client, channel_id: int, timeout_s: float
) -> discord.abc.GuildChannel | discord.abc.PrivateChannel | discord.Thread:
    async with asyncio.timeout(timeout_s):
        return await client.fetch_channel(channel_id)


async def message_for_member(
    interaction: discord.Interaction[Any], reference: str
) -> discord.Message:
    """The message a link or id names, if the invoking member may read it there."""
    location = locate_message(reference, _place_of(interaction))
    await _check_member_may_read(interaction, location.channel_id)
    channel: discord.PartialMessageable = interaction.client.get_partial_messageable(
        location.channel_id
    )
    try:
        message = await channel.fetch_message(location.message_id)
    except (discord.NotFound, discord.Forbidden):
        raise UserError(
            "I cannot see that message; link a message in a channel I can read."
        ) from None
    # Discord blanks the attachments of members' posts in a server for apps without the
    # privileged Message Content intent (Easel asks for none); Easel's own posts stay whole.
    if (
        interaction.guild_id is not None
        and message.author != interaction.client.user
        and not message.attachments
    ):
        raise UserError(
            "That message has no picture I can see: Discord shows me members' pictures from a "
            "link only when my operator turns on the Message Content intent. Upload the "
            "picture instead, or use the message's Apps menu (Vary, Upscale)."
        )
    return message


async def check_member_may_read_channel(
    interaction: discord.Interaction[Any],
    channel_id: int,
    *,
    made_by_clicker: bool,
    restricted_when_made: bool,
    refusal: str = NOT_YOURS_TO_CLICK,
    hidden_refusal: str = EASEL_LOST_SIGHT,
) -> GuildChannelLike | None:
    """For buttons and their forms, and /show (``refusal``: the sentence it gets; with
    ``hidden_refusal`` when Discord hides the channel from Easel itself): a job's
    picture is for members who can read the channel it was made in. Clicked there, Discord's
    own reckoning of the member's permissions in it counts: a form opened before they lost the
    channel is checked when it is submitted. Their
    own job, clicked there, needs the channel in sight only, not its history (its prompt and
    pictures were theirs already); in sight means what the mask editor's submit asks too
    (``member_may_see``): what Easel makes is posted there, and a private thread they have
    left or were removed from is out of their sight, so Easel posts nothing there for them.
    A picture made in an age-restricted channel (``restricted_when_made``) stays in those, its
    own channel included once a moderator turned its flag off. A private thread Discord
    refuses Easel (Easel was taken out of it) gets ``hidden_refusal``, clicked there or not.
    Clicked elsewhere, a channel the cache lacks (an archived thread) is asked of Discord:
    returned, for the command's later checks to reuse (``_check_member_may_read``); clicked
    there, the channel as the interaction carries it (the cache drops an archived thread)."""
    if interaction.guild_id is None or channel_id != interaction.channel_id:
        return await _check_member_may_read(
            interaction,
            channel_id,
            refusal,
            restricted_when_made=restricted_when_made,
            hidden_refusal=hidden_refusal,
        )
    permissions = interaction.permissions
    check_member_may_read(
        ChannelAccess(
            True,
            permissions.view_channel,
            made_by_clicker or permissions.read_message_history,
        ),
        refusal,
    )
    await _check_thread_member(
        interaction,
        interaction.channel,
        permissions,
        refusal=refusal,
        hidden_refusal=hidden_refusal,
    )
    check_age_restriction_kept(
        source_age_restricted=is_age_restricted_picture(
            interaction.channel, restricted_when_made=restricted_when_made
        ),
        here_age_restricted=is_age_restricted(interaction.channel),
    )
    clicked_in = interaction.channel
    return clicked_in if isinstance(clicked_in, discord.abc.GuildChannel | discord.Thread) else None


async def check_member_may_use(
    interaction: discord.Interaction[Any], message: discord.Message
) -> None:
    """For message menus: Discord offers them on messages the member sees; Easel holds to it too."""
    guild_id = None if message.guild is None else message.guild.id
    check_same_place(guild_id, message.channel.id, _place_of(interaction))
    await _check_member_may_read(interaction, message.channel.id)


def _discord_origins() -> tuple[str, ...]:
    """Discord's CDN, and the origin its API is reached at (a test's fake Discord)."""
    api = urlsplit(discord.http.Route.BASE)
    return (*DISCORD_CDN_ORIGINS, f"{api.scheme}://{api.netloc}".lower())


async def check_member_may_read_link(interaction: discord.Interaction[Any], reference: str) -> None:
    """What ``attachment_for_member`` and ``message_for_member`` refuse of ``reference``
    before fetching anything (a link from elsewhere, a channel the member may not read): a
    refusal before the command is acknowledged. They check again when they fetch."""
    place = _place_of(interaction)
    location = locate_attachment(reference, place, _discord_origins()) or locate_message(
        reference, place
    )
    await _check_member_may_read(interaction, location.channel_id)


async def attachment_for_member(
    interaction: discord.Interaction[Any], reference: str
) -> tuple[str, bytes] | None:
    """The file name and bytes of the picture an attachment URL names (None: ``reference``
    is not one), if the invoking member may read the channel it was posted in."""
    location = locate_attachment(reference, _place_of(interaction), _discord_origins())
    if location is None:
        return None
    await _check_member_may_read(interaction, location.channel_id)
    http = interaction.client.http
    try:
        # Not discord.py's get_from_cdn: it reads a whole response, and attachments are large.
        data = await fetch_picture(
            reference.strip(),
            location.filename,
            _discord_origins(),
            proxy=http.proxy,
            proxy_auth=http.proxy_auth,
        )
    except DownloadFailed:
        raise UserError(
            "I cannot fetch that picture (its link may have expired); attach it or link its "
            "message."
        ) from None
    return location.filename, data
