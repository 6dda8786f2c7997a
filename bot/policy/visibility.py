"""Which message a member may have Easel read on their behalf (pure: no discord, no torch).

Easel reads with the bot's rights, which usually reach further than the member's: moderator
channels, other servers, other people's DMs with the bot. A picture is only read for a member
from the place they invoked Easel in: the same server, in a channel where they have View Channel
and Read Message History (in a private thread, one they were added to or may manage); in a DM,
only that DM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.memo import ExpiringKeys
from bot.user_errors import Reason, UserError

# A message link (https://discord.com/channels/<guild|@me>/<channel>/<message>) or a bare id.
_MESSAGE_REFERENCE = re.compile(
    r"^\s*(?:\S*/channels/(?P<guild>\d+|@me)/(?P<channel>\d+)/)?(?P<id>\d{15,22})\s*$"
)
DIRECT_MESSAGES = "@me"  # the guild part of a link to a message in a DM

OTHER_SERVER = "That message is in another server; link a picture from this server."
DIRECT_MESSAGE = "That message is in a direct message; link a picture from this server."
OUTSIDE_THIS_DM = "Here I can only use pictures from this conversation; link a message in it."
NOT_READABLE = (
    "That message is not in a channel of this server you can read; "
    "link a picture from a channel you can see."
)
NOT_YOURS_TO_CLICK = (
    "That picture was made in a channel you cannot read, so its buttons are not for you; "
    "make your own with /imagine."
)
THREAD_CHECK_FAILED = (
    "Discord did not answer while I checked who may see that channel; try again in a moment."
)
NO_COMMANDS_HERE = (
    "You may not use application commands in this channel now (a timeout, or this server's "
    "permissions), so Easel's buttons and forms make nothing for you here either."
)
# Filled with the permissions the member lacks, named as Discord's settings name them.
NO_PICTURES_HERE = (
    "You may not post pictures in this channel (you lack {}), so Easel posts none here for you "
    "either; ask in a channel where you may, or turn on `/settings private_results:True` to "
    "see your results alone."
)
# The same for an answer of text alone (/describe's suggestions): Send Messages is enough.
NO_MESSAGES_HERE = (
    "You may not send messages in this channel (you lack {}), so Easel posts none here for you "
    "either; ask in a channel where you may, or turn on `/settings private_results:True` to "
    "see your answers alone."
)


@dataclass(frozen=True)
class Place:
    """Where a member invoked Easel: a server channel, or a DM (``guild_id`` None)."""

    guild_id: int | None
    channel_id: int | None


@dataclass(frozen=True)
class MessageLocation:
    channel_id: int
    message_id: int


@dataclass(frozen=True)
class ChannelAccess:
    """What the server's cache says about a channel for the invoking member; in a private
    thread, also whether Discord counts them among its members (``thread_member``)."""

    in_this_server: bool
    view_channel: bool
    read_message_history: bool
    thread_member: bool = True


class ThreadMembershipUnknown(UserError):
    """Discord failed (an error answer, no answer) when asked whether the member is in a
    private thread: refused as if they were not, but told it was Discord, not their access
    (counted under ``Reason.DISCORD``, not kept as the member's refusal)."""

    def __init__(self) -> None:
        super().__init__(THREAD_CHECK_FAILED, Reason.DISCORD)


def must_ask_thread_membership(*, private_thread: bool, manage_threads: bool) -> bool:
    """Discord's rule: a private thread is seen by the members added to it and by members
    with Manage Threads in its parent (Administrator includes it); its permissions, taken
    from the parent, do not say who was added, so that is asked of Discord."""
    return private_thread and not manage_threads


class RecentThreadMembers:
    """Who Discord lately said is in which private thread, for ``ttl_s`` seconds: a click
    must be answered within 3 s (a Remix form cannot be deferred), and every click in a
    private thread would otherwise ask Discord first. Only "is a member" is remembered, so a
    member just added gets in at once; one removed keeps their way in for up to ``ttl_s``."""

    def __init__(self, ttl_s: float) -> None:
        self._members: ExpiringKeys[tuple[int, int]] = ExpiringKeys(ttl_s)  # (thread, member)

    def remember(self, thread_id: int, member_id: int, now: float) -> None:
        self._members.add((thread_id, member_id), now)

    def is_member(self, thread_id: int, member_id: int, now: float) -> bool:
        return self._members.holds((thread_id, member_id), now)


def locate_message(reference: str, where: Place) -> MessageLocation:
    """The message a link or id names, if it is in ``where``'s server (or ``where``'s DM).

    A bare id means the channel the member is in. The channel's permissions are checked after,
    with ``check_member_may_read``, because they need the server's cache.
    """
    match = _MESSAGE_REFERENCE.match(reference)
    if match is None:
        raise UserError(
            f"{reference!r} is not a message link or id; copy it with "
            "right-click › Copy Message Link."
        )
    message_id = int(match["id"])
    if match["channel"] is None:
        if where.channel_id is None:
            raise UserError("Give the full message link: this place has no channel to look in.")
        return MessageLocation(where.channel_id, message_id)
    channel_id = int(match["channel"])
    guild = match["guild"]
    check_same_place(None if guild == DIRECT_MESSAGES else int(guild), channel_id, where)
    return MessageLocation(channel_id, message_id)


def check_same_place(guild_id: int | None, channel_id: int, where: Place) -> None:
    """A message in ``channel_id`` of ``guild_id`` (None: a DM) may be read from ``where`` only
    in the same server, or, from a DM, in that same DM."""
    if where.guild_id is None:
        if guild_id is not None or channel_id != where.channel_id:
            raise UserError(OUTSIDE_THIS_DM)
    elif guild_id is None:
        raise UserError(DIRECT_MESSAGE)
    elif guild_id != where.guild_id:
        raise UserError(OTHER_SERVER, Reason.PERMISSION)


@dataclass(frozen=True)
class PostingRights:
    """The member's permissions in the channel where Easel posts what it makes for them."""

    use_application_commands: bool
    send_messages: bool  # in a thread: Send Messages in Threads
    attach_files: bool
    in_thread: bool


def why_may_not_act(rights: PostingRights, *, private: bool, text_only: bool = False) -> str | None:
    """Why Easel may not post what it makes for the member there (None: it may). They need
    Use Application Commands (a timeout takes it away): Discord asks it of commands only, not
    of buttons, of a form opened before, nor of the mask editor's page. A result everyone sees
    is a picture posted for them, so it also needs what posting one takes in that channel
    (a read-only channel, a server that keeps Attach Files from new members); an answer of
    text alone (``text_only``) needs only what sending a message takes, as the member's own
    message would. A private result (ephemeral) is seen by them alone and needs neither."""
    if not rights.use_application_commands:
        return NO_COMMANDS_HERE
    if private:
        return None
    send = "Send Messages in Threads" if rights.in_thread else "Send Messages"
    needed = [(send, rights.send_messages)]
    if not text_only:
        needed.append(("Attach Files", rights.attach_files))
    missing = [name for name, held in needed if not held]
    if not missing:
        return None
    return (NO_MESSAGES_HERE if text_only else NO_PICTURES_HERE).format(" and ".join(missing))


def check_may_act(rights: PostingRights, *, private: bool, text_only: bool = False) -> None:
    """``why_may_not_act`` as a refusal."""
    refusal = why_may_not_act(rights, private=private, text_only=text_only)
    if refusal is not None:
        raise UserError(refusal, Reason.PERMISSION)


def check_member_may_read(access: ChannelAccess, refusal: str = NOT_READABLE) -> None:
    """The member needs View Channel and Read Message History where the message is (and, in
    a private thread, to be in it or to manage threads: ``must_ask_thread_membership``);
    ``refusal`` says so where they asked (a link: ``NOT_READABLE``; a button:
    ``NOT_YOURS_TO_CLICK``)."""
    if not (
        access.in_this_server
        and access.view_channel
        and access.read_message_history
        and access.thread_member
    ):
        raise UserError(refusal, Reason.PERMISSION)


# A picture's address on Discord's CDN: <origin>/attachments/<channel>/<attachment>/<file name>,
# signed or not (?ex=...&is=...&hm=...).
_ATTACHMENT_URL = re.compile(
    r"^\s*(?P<origin>https?://[^/\s]+)/attachments/(?P<channel>\d+)/\d+/"
    r"(?P<name>[^/?#\s]+)(?:\?\S*)?\s*$"
)
DISCORD_CDN_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")
NOT_FROM_DISCORD = (
    "I only fetch pictures from Discord itself; attach the picture or link its message."
)


@dataclass(frozen=True)
class AttachmentLocation:
    channel_id: int
    filename: str


def locate_attachment(
    reference: str, where: Place, origins: tuple[str, ...]
) -> AttachmentLocation | None:
    """The channel an attachment URL was posted in (None: ``reference`` is not one), if it is
    on Discord (one of ``origins``) and, from a DM, in that DM. A channel of a server is
    checked after, with ``check_member_may_read``, as for a message link: the URL names no
    server, so a channel that is not this server's is refused there."""
    match = _ATTACHMENT_URL.match(reference)
    if match is None:
        return None
    if match["origin"].lower() not in origins:
        raise UserError(NOT_FROM_DISCORD)
    channel_id = int(match["channel"])
    if where.guild_id is None and channel_id != where.channel_id:
        raise UserError(OUTSIDE_THIS_DM)
    return AttachmentLocation(channel_id, match["name"])
