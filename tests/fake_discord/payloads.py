"""Discord API v10 JSON shapes as Discord sends them (the fields discord.py reads)."""

from __future__ import annotations

import datetime
import io
import itertools
import mimetypes
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
PERMISSION_ADMINISTRATOR = 1 << 3
PERMISSION_MANAGE_GUILD = 1 << 5
PERMISSION_VIEW_AUDIT_LOG = 1 << 7
PERMISSION_VIEW_CHANNEL = 1 << 10
PERMISSION_SEND_MESSAGES = 1 << 11
PERMISSION_SEND_TTS_MESSAGES = 1 << 12
PERMISSION_EMBED_LINKS = 1 << 14
PERMISSION_ATTACH_FILES = 1 << 15
PERMISSION_READ_MESSAGE_HISTORY = 1 << 16
PERMISSION_MENTION_EVERYONE = 1 << 17
PERMISSION_USE_APPLICATION_COMMANDS = 1 << 31
PERMISSION_MANAGE_THREADS = 1 << 34
PERMISSION_SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1
DEFAULT_MEMBER_PERMISSIONS = (
    PERMISSION_VIEW_CHANNEL
    | PERMISSION_SEND_MESSAGES
    | PERMISSION_EMBED_LINKS
    | PERMISSION_ATTACH_FILES
    | PERMISSION_READ_MESSAGE_HISTORY
    | PERMISSION_USE_APPLICATION_COMMANDS
    | PERMISSION_SEND_MESSAGES_IN_THREADS  # in @everyone's defaults, as Discord's
)
# What a user may do in a DM with the bot (Discord reports these in DM interactions).
DM_PERMISSIONS = DEFAULT_MEMBER_PERMISSIONS
# Lost along with Send Messages, as Discord (and discord.py's permissions_for) computes it.
NEEDS_SEND_MESSAGES = (
    PERMISSION_SEND_TTS_MESSAGES
    | PERMISSION_EMBED_LINKS
    | PERMISSION_ATTACH_FILES
    | PERMISSION_MENTION_EVERYONE
)

# Gateway intents that change what the fake sends.
AUDIT_LOG_MEMBER_KICK = 20
AUDIT_LOG_MEMBER_UPDATE = 24
AUDIT_LOG_AUTO_MODERATION_USER_COMMUNICATION_DISABLED = 145

INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MODERATION = 1 << 2
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_COMPONENTS_V2 = 1 << 15
FLAGS_A_CLIENT_MAY_SET = (1 << 2) | (1 << 12) | FLAG_EPHEMERAL | FLAG_COMPONENTS_V2

CHANNEL_TYPE_GUILD_TEXT = 0
CHANNEL_TYPE_DM = 1
CHANNEL_TYPE_PUBLIC_THREAD = 11
CHANNEL_TYPE_PRIVATE_THREAD = 12
THREAD_TYPES = (CHANNEL_TYPE_PUBLIC_THREAD, CHANNEL_TYPE_PRIVATE_THREAD)

# Permission overwrite targets.
OVERWRITE_ROLE = 0
OVERWRITE_MEMBER = 1

# Interaction contexts (where a command was used) and installation types.
CONTEXT_GUILD = 0
CONTEXT_BOT_DM = 1
CONTEXT_PRIVATE_CHANNEL = 2
INSTALL_GUILD = 0
INSTALL_USER = 1


class SnowflakeFactory:
    """Ids with Discord's layout (ms since 2015 << 22), strictly increasing within a fake."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        milliseconds = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (milliseconds << 22) | (next(self._counter) & 0x3FFFFF)


def iso_timestamp(epoch_seconds: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC).isoformat()


@dataclass
class MemberRecord:
    user_id: int
    name: str
    roles: tuple[int, ...]
    permissions: int
    joined_at: float
    bot: bool = False
    timed_out_until: float | None = None  # a timeout's end (epoch seconds), as moderators set it


@dataclass
class RoleRecord:
    role_id: int
    name: str
    permissions: int
    position: int


@dataclass(frozen=True)
class Overwrite:
    """A channel permission overwrite for a role (``@everyone``'s id is the guild's) or member."""

    target_id: int
    allow: int = 0
    deny: int = 0
    member: bool = False

    def payload(self) -> Json:
        return {
            "id": str(self.target_id),
            "type": OVERWRITE_MEMBER if self.member else OVERWRITE_ROLE,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


def channel_permissions(
    *,
    base: int,
    is_owner: bool,
    guild_id: int,
    user_id: int,
    member_roles: tuple[int, ...],
    overwrites: list[Json],
) -> int:
    """A member's permissions in a guild channel, computed the way Discord documents it.

    Base (``@everyone`` + the member's roles) -> owner and Administrator get everything ->
    the ``@everyone`` overwrite -> the member's role overwrites combined -> the member's own
    overwrite. Without View Channel nothing is left; without Send Messages, nothing that needs it.
    """
    if is_owner or base & PERMISSION_ADMINISTRATOR:
        return ALL_PERMISSIONS
    by_target = {(int(o["type"]), int(o["id"])): o for o in overwrites}
    permissions = base
    everyone = by_target.get((OVERWRITE_ROLE, guild_id))
    if everyone is not None:
        permissions = (permissions & ~int(everyone["deny"])) | int(everyone["allow"])
    allow = deny = 0
    for role_id in member_roles:
        overwrite = by_target.get((OVERWRITE_ROLE, role_id))
        if overwrite is not None:
            allow |= int(overwrite["allow"])
            deny |= int(overwrite["deny"])
    permissions = (permissions & ~deny) | allow
    own = by_target.get((OVERWRITE_MEMBER, user_id))
    if own is not None:
        permissions = (permissions & ~int(own["deny"])) | int(own["allow"])
    if not permissions & PERMISSION_VIEW_CHANNEL:
        return 0
    if not permissions & PERMISSION_SEND_MESSAGES:
        permissions &= ~NEEDS_SEND_MESSAGES
    return permissions


@dataclass
class StoredAttachment:
    """A file Discord holds: uploaded by the bot, or by a user as a command input."""

    attachment_id: int
    channel_id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    ephemeral: bool = False
    width: int | None = field(init=False, default=None)
    height: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.content_type.startswith("image/"):
            self.width, self.height = image_size(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.attachment_id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.width is not None:
            data["width"], data["height"] = self.width, self.height
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


def image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return None, None


def guess_content_type(filename: str, data: bytes) -> str:
    """Discord ignores the uploaded part's content type and infers it from name and bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def user_payload(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member_payload(member: MemberRecord, *, with_permissions: bool = False) -> Json:
    data: Json = {
        "user": user_payload(member.user_id, member.name, bot=member.bot),
        "nick": None,
        "avatar": None,
        "roles": [str(role_id) for role_id in member.roles],
        "joined_at": iso_timestamp(member.joined_at),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": (
            None if member.timed_out_until is None else iso_timestamp(member.timed_out_until)
        ),
    }
    if with_permissions:
        data["permissions"] = str(member.permissions)
    return data


def role_payload(role: RoleRecord) -> Json:
    return {
        "id": str(role.role_id),
        "name": role.name,
        "color": 0,
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def text_channel_payload(
    channel_id: int,
    guild_id: int,
    name: str,
    position: int,
    *,
    overwrites: tuple[Overwrite, ...] = (),
    nsfw: bool = False,
) -> Json:
    return {
        "id": str(channel_id),
        "type": CHANNEL_TYPE_GUILD_TEXT,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [o.payload() for o in overwrites],
        "nsfw": nsfw,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "parent_id": None,
        "flags": 0,
    }


def thread_payload(
    thread_id: int,
    parent: Json,
    name: str,
    *,
    owner_id: int,
    private: bool,
    member_count: int,
    created_at: float,
) -> Json:
    """A thread of the text channel ``parent``: no overwrites of its own (its parent's apply)."""
    return {
        "id": str(thread_id),
        "type": CHANNEL_TYPE_PRIVATE_THREAD if private else CHANNEL_TYPE_PUBLIC_THREAD,
        "guild_id": parent["guild_id"],
        "parent_id": parent["id"],
        "owner_id": str(owner_id),
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "total_message_sent": 0,
        "member_count": member_count,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": iso_timestamp(created_at),
            "locked": False,
            "invitable": not private,
            "create_timestamp": iso_timestamp(created_at),
        },
    }


def thread_member_payload(thread_id: int, user_id: int, joined_at: float) -> Json:
    return {
        "id": str(thread_id),
        "user_id": str(user_id),
        "join_timestamp": iso_timestamp(joined_at),
        "flags": 0,
    }


def dm_channel_payload(channel_id: int, recipient: Json) -> Json:
    return {
        "id": str(channel_id),
        "type": CHANNEL_TYPE_DM,
        "recipients": [recipient],
        "last_message_id": None,
        "flags": 0,
    }


def message_payload(
    *,
    message_id: int,
    channel_id: int,
    guild_id: int | None,
    author: Json,
    created_at: float,
    message_type: int = 0,
) -> Json:
    data: Json = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": "",
        "timestamp": iso_timestamp(created_at),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "type": message_type,
        "flags": 0,
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    return data
