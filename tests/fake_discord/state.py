"""All the fake Discord holds: guilds, members, channels, messages, files, commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .payloads import (
    ALL_PERMISSIONS,
    CHANNEL_TYPE_DM,
    CHANNEL_TYPE_PRIVATE_THREAD,
    CONTEXT_BOT_DM,
    CONTEXT_GUILD,
    CONTEXT_PRIVATE_CHANNEL,
    DEFAULT_MEMBER_PERMISSIONS,
    DM_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAGS_A_CLIENT_MAY_SET,
    PERMISSION_ADMINISTRATOR,
    PERMISSION_MANAGE_THREADS,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_VIEW_CHANNEL,
    THREAD_TYPES,
    Json,
    MemberRecord,
    Overwrite,
    RoleRecord,
    SnowflakeFactory,
    StoredAttachment,
    channel_permissions,
    dm_channel_payload,
    guess_content_type,
    iso_timestamp,
    member_payload,
    message_payload,
    role_payload,
    text_channel_payload,
    thread_member_payload,
    thread_payload,
    user_payload,
)
from .records import (
    ChangeFeed,
    InteractionHandle,
    RateLimitRecord,
    RestCall,
    StoredMessage,
    UploadedFile,
)
from .rules import MAX_FILES_PER_MESSAGE, Violation

DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


# ``FakeDiscord.fail``'s status for a connection closed before any answer.
CONNECTION_DROPPED = 0


class RequestRejected(Exception):
    """Ends a request with Discord's error answer; ``violation`` is recorded when set."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        violation: tuple[Violation, str] | None = None,
        errors: Json | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.violation = violation
        self.errors = errors

    def body(self) -> Json:
        body: Json = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class CommandNotShown(LookupError):
    """The command exists, but Discord's client would not offer it here (its contexts)."""


@dataclass
class GuildRecord:
    guild_id: int  # also the id of its @everyone role
    name: str
    owner_id: int
    roles: dict[int, RoleRecord]
    members: dict[int, MemberRecord]
    # Banned users, each as Discord names them in GUILD_BAN_REMOVE (no longer members).
    banned: dict[int, Json] = field(default_factory=dict)


@dataclass(frozen=True)
class AddedGuild:
    """What ``FakeDiscord.add_guild`` made: the guild, its first channel, owner and Member role."""

    guild_id: int
    channel_id: int
    owner_id: int
    member_role_id: int


@dataclass
class RateLimitPlan:
    remaining: int
    retry_after: float
    is_global: bool


class DiscordState:
    def __init__(self, *, token: str, attachment_size_limit: int) -> None:
        self.token = token
        # Per file: a bot's own message's in a server's channels (its boost tier's), and the
        # default of an interaction's (its member's Nitro or the boost, whichever is larger).
        self.attachment_size_limit = attachment_size_limit
        # Per file in a direct message: Discord's smallest limit, whatever the server's.
        self.direct_message_size_limit = DEFAULT_ATTACHMENT_SIZE_LIMIT
        self.origin = ""  # "http://127.0.0.1:PORT", known once the server listens
        self.ids = SnowflakeFactory()
        self.feed = ChangeFeed()
        self.clock_offset = 0.0
        # Channels where the bot lacks Send Messages: posting there answers 403 50013.
        self.channels_without_send: set[int] = set()
        # Like Discord's media proxy may: PNGs served re-encoded as WebP, their text chunks gone.
        self.cdn_reencodes_pictures = False
        # Bytes of each attachment (by id) sent to its last downloader.
        self.cdn_bytes_served: dict[int, int] = {}
        self.violations: list[str] = []
        self.calls: list[RestCall] = []
        self.rate_limit_plans: dict[tuple[str, str], RateLimitPlan] = {}
        # (method, route) -> how many more calls get a Discord server error (its status), and
        # whether each takes effect first (landed: only its answer is lost).
        self.outage_plans: dict[tuple[str, str], tuple[int, int, bool]] = {}
        self.rate_limit_log: list[RateLimitRecord] = []

        self.application_id = self.ids.next()
        self.bot_user_id = self.application_id  # Discord gives a bot the application's id
        # The Developer Portal's Public Bot toggle (on by default): anyone may add the bot.
        self.bot_public = True
        self.guild_id = self.ids.next()
        self.channel_id = self.ids.next()
        self.owner_id = self.ids.next()
        self.member_role_id = self.ids.next()
        self.moderator_role_id = self.ids.next()
        # The first guild's roles and members (``guilds`` holds every guild, this one included).
        self.roles: dict[int, RoleRecord] = {
            self.guild_id: RoleRecord(self.guild_id, "@everyone", DEFAULT_MEMBER_PERMISSIONS, 0),
            self.member_role_id: RoleRecord(
                self.member_role_id, "Member", DEFAULT_MEMBER_PERMISSIONS, 1
            ),
            self.moderator_role_id: RoleRecord(
                self.moderator_role_id, "Moderator", DEFAULT_MEMBER_PERMISSIONS, 2
            ),
        }
        self.members: dict[int, MemberRecord] = {}
        self.guilds: dict[int, GuildRecord] = {
            self.guild_id: GuildRecord(
                self.guild_id, "Easel test guild", self.owner_id, self.roles, self.members
            )
        }
        self.add_member(self.bot_user_id, "Easel", bot=True)
        self.tester_id = self.ids.next()
        self.add_member(self.tester_id, "tester", roles=(self.member_role_id,))
        self.add_member(
            self.owner_id, "owner", roles=(self.member_role_id,), permissions=ALL_PERMISSIONS
        )
        self.channels: dict[int, Json] = {
            self.channel_id: text_channel_payload(self.channel_id, self.guild_id, "studio", 0)
        }
        self.dm_channel_by_user: dict[int, int] = {}
        # Who was added to each thread (by thread id): a private thread is for them (and for
        # members with Manage Threads in its parent).
        self.thread_members: dict[int, dict[int, float]] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.global_commands: list[Json] = []
        self.guild_commands: dict[int, list[Json]] = {}
        self.interactions: dict[int, InteractionHandle] = {}

    # -- clock and bookkeeping -------------------------------------------------------------

    def now(self) -> float:
        """Monotonic seconds on the fake's clock, which tests can move forward."""
        return time.monotonic() + self.clock_offset

    def wall_now(self) -> float:
        return time.time() + self.clock_offset

    def violate(self, kind: Violation, detail: str) -> None:
        self.violations.append(f"{kind}: {detail}")
        self.feed.notify()

    # -- people and places -----------------------------------------------------------------

    def guild(self, guild_id: int | None = None) -> GuildRecord:
        try:
            return self.guilds[self.guild_id if guild_id is None else guild_id]
        except KeyError:
            raise LookupError(
                f"no guild {guild_id}; the fake holds {sorted(self.guilds)}"
            ) from None

    def add_member(
        self,
        user_id: int,
        name: str,
        roles: tuple[int, ...] = (),
        permissions: int | None = None,
        *,
        bot: bool = False,
        guild_id: int | None = None,
    ) -> MemberRecord:
        guild = self.guild(guild_id)
        if user_id in guild.banned:  # Discord refuses a banned user's join
            raise ValueError(f"user {user_id} is banned from guild {guild.guild_id}: unban first")
        unknown = [r for r in roles if r not in guild.roles]
        if unknown:
            raise ValueError(
                f"unknown role ids {unknown}; known roles: {self.role_names(guild.guild_id)}"
            )
        member = MemberRecord(
            user_id=user_id,
            name=name,
            roles=tuple(roles),
            permissions=(
                self._permissions_from_roles(guild, roles) if permissions is None else permissions
            ),
            joined_at=self.wall_now(),
            bot=bot,
        )
        guild.members[user_id] = member
        return member

    def bot_guilds(self) -> list[int]:
        """The guilds the bot is a member of (``FakeDiscord.remove_bot`` takes it out of one)."""
        return [g.guild_id for g in self.guilds.values() if self.bot_user_id in g.members]

    def ban(self, user_id: int, guild_id: int | None = None) -> Json:
        """``user_id`` banned from ``guild_id`` (default: the first), no longer a member there:
        their user payload, kept for the unban's event."""
        user = self.user_json(user_id)
        self.remove_member(user_id, guild_id)
        self.guild(guild_id).banned[user_id] = user
        return user

    def unban(self, user_id: int, guild_id: int | None = None) -> Json:
        """The ban of ``user_id`` lifted (LookupError if none): their user payload. They may
        join again (``add_member``); lifting a ban joins no one."""
        guild = self.guild(guild_id)
        if user_id not in guild.banned:
            raise LookupError(f"user {user_id} is not banned from guild {guild.guild_id}")
        return guild.banned.pop(user_id)

    def remove_member(self, user_id: int, guild_id: int | None = None) -> None:
        """``user_id`` leaves ``guild_id`` (default: the first): LookupError if not a member."""
        self.member(user_id, guild_id)
        del self.guild(guild_id).members[user_id]

    def _permissions_from_roles(self, guild: GuildRecord, roles: tuple[int, ...]) -> int:
        permissions = guild.roles[guild.guild_id].permissions
        for role_id in roles:
            permissions |= guild.roles[role_id].permissions
        return permissions

    def role_names(self, guild_id: int | None = None) -> dict[int, str]:
        return {role.role_id: role.name for role in self.guild(guild_id).roles.values()}

    def member(self, user_id: int, guild_id: int | None = None) -> MemberRecord:
        guild = self.guild(guild_id)
        try:
            return guild.members[user_id]
        except KeyError:
            members = [(m.user_id, m.name) for m in guild.members.values()]
            raise LookupError(
                f"user {user_id} is not a member of guild {guild.guild_id}; add them with "
                f"add_member() first (members: {members})"
            ) from None

    def find_user(self, user_id: int) -> MemberRecord | None:
        """The user's record in any guild they share with the bot."""
        for guild in self.guilds.values():
            if user_id in guild.members:
                return guild.members[user_id]
        return None

    def user_json(self, user_id: int) -> Json:
        member = self.find_user(user_id)
        if member is None:
            raise LookupError(f"user {user_id} is in no guild of the fake; add_member() first")
        return user_payload(member.user_id, member.name, bot=member.bot)

    def bot_user_json(self) -> Json:
        return self.user_json(self.bot_user_id)

    def guild_json(self, *, with_members: bool, guild_id: int | None = None) -> Json:
        guild = self.guild(guild_id)
        members = [
            member_payload(m)
            for m in guild.members.values()
            if with_members or m.user_id == self.bot_user_id
        ]
        in_guild = [c for c in self.channels.values() if c.get("guild_id") == str(guild.guild_id)]
        return {
            "id": str(guild.guild_id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "features": [],
            "roles": [role_payload(r) for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "joined_at": iso_timestamp(self.wall_now()),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": members,
            "channels": [c for c in in_guild if c["type"] not in THREAD_TYPES],
            # Discord lists the active threads the bot can view (never an archived one).
            "threads": [
                c
                for c in in_guild
                if c["type"] in THREAD_TYPES
                and not c["thread_metadata"]["archived"]
                and self.permissions_in(int(c["id"]), self.bot_user_id)
            ],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def add_guild(self, name: str, owner_id: int | None) -> AddedGuild:
        """A guild the bot is in, with @everyone, a Member role, its owner and one channel."""
        guild_id = self.ids.next()
        member_role_id = self.ids.next()
        owner = self.ids.next() if owner_id is None else owner_id
        roles = {
            guild_id: RoleRecord(guild_id, "@everyone", DEFAULT_MEMBER_PERMISSIONS, 0),
            member_role_id: RoleRecord(member_role_id, "Member", DEFAULT_MEMBER_PERMISSIONS, 1),
        }
        self.guilds[guild_id] = GuildRecord(guild_id, name, owner, roles, {})
        self.add_member(self.bot_user_id, "Easel", bot=True, guild_id=guild_id)
        known = self.find_user(owner)
        self.add_member(owner, f"{name} owner" if known is None else known.name, guild_id=guild_id)
        channel_id = self.add_text_channel("general", guild_id=guild_id)
        return AddedGuild(guild_id, channel_id, owner, member_role_id)

    def add_role(self, name: str, permissions: int, *, guild_id: int | None = None) -> RoleRecord:
        """A role above the others; give it to members with ``add_member(roles=...)``."""
        roles = self.guild(guild_id).roles
        role = RoleRecord(self.ids.next(), name, permissions, len(roles))
        roles[role.role_id] = role
        return role

    def add_text_channel(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        overwrites: tuple[Overwrite, ...] = (),
        nsfw: bool = False,
    ) -> int:
        guild = self.guild(guild_id)
        channel_id = self.ids.next()
        position = len(self.channels)
        self.channels[channel_id] = text_channel_payload(
            channel_id, guild.guild_id, name, position, overwrites=overwrites, nsfw=nsfw
        )
        return channel_id

    def add_thread(
        self, parent_id: int, name: str, *, private: bool, owner_id: int, members: tuple[int, ...]
    ) -> int:
        parent = self.channel(parent_id)
        if parent["type"] in THREAD_TYPES or parent.get("guild_id") is None:
            raise ValueError(f"channel {parent_id} cannot hold threads: it is no server channel")
        thread_id = self.ids.next()
        joined = dict.fromkeys((owner_id, *members), self.wall_now())
        self.thread_members[thread_id] = joined
        self.channels[thread_id] = thread_payload(
            thread_id,
            parent,
            name,
            owner_id=owner_id,
            private=private,
            member_count=len(joined),
            created_at=self.wall_now(),
        )
        return thread_id

    def set_thread_member(self, thread_id: int, user_id: int, *, member: bool) -> Json:
        """Adds ``user_id`` to the thread or removes them; returns the thread."""
        thread = self.channel(thread_id)
        joined = self.thread_members[thread_id]
        if member:
            joined.setdefault(user_id, self.wall_now())
        else:
            joined.pop(user_id, None)
        thread["member_count"] = len(joined)
        return thread

    def thread_member(self, thread_id: int, user_id: int) -> Json:
        """``GET /channels/{thread}/thread-members/{user}``: 404 10007 for a non-member."""
        if self.channel(thread_id)["type"] not in THREAD_TYPES:
            raise RequestRejected(400, 50024, "Cannot execute action on this channel type")
        joined_at = self.thread_members[thread_id].get(user_id)
        if joined_at is None:
            raise RequestRejected(404, 10007, "Unknown Member")
        return thread_member_payload(thread_id, user_id, joined_at)

    def set_overwrite(self, channel_id: int, overwrite: Overwrite) -> Json:
        """Adds or replaces the overwrite for ``overwrite.target_id``; returns the channel."""
        channel = self.channel(channel_id)
        guild = self.guild(self.guild_id_of(channel_id))
        if overwrite.member and self.find_user(overwrite.target_id) is None:
            raise ValueError(f"overwrite for unknown user {overwrite.target_id}")
        if not overwrite.member and overwrite.target_id not in guild.roles:
            raise ValueError(
                f"{overwrite.target_id} is no role of guild {guild.guild_id} "
                f"({self.role_names(guild.guild_id)}); pass member=True for a member"
            )
        kept = [o for o in channel["permission_overwrites"] if int(o["id"]) != overwrite.target_id]
        channel["permission_overwrites"] = [*kept, overwrite.payload()]
        return channel

    def permissions_in(self, channel_id: int, user_id: int) -> int:
        """``user_id``'s permissions in a channel, with roles and overwrites (0 if not there)."""
        channel = self.channel(channel_id)
        if channel["type"] == CHANNEL_TYPE_DM:
            recipients = {int(u["id"]) for u in channel["recipients"]}
            return DM_PERMISSIONS if user_id in recipients | {self.bot_user_id} else 0
        if channel["type"] in THREAD_TYPES:
            return self._thread_permissions(channel, user_id)
        guild = self.guild(self.guild_id_of(channel_id))
        member = guild.members.get(user_id)
        if member is None:
            return 0
        permissions = channel_permissions(
            base=member.permissions,
            is_owner=user_id == guild.owner_id,
            guild_id=guild.guild_id,
            user_id=user_id,
            member_roles=member.roles,
            overwrites=channel["permission_overwrites"],
        )
        exempt = user_id == guild.owner_id or member.permissions & PERMISSION_ADMINISTRATOR
        if self.is_timed_out(member) and not exempt:
            # Discord leaves a member in a timeout reading alone (the owner and admins keep all).
            permissions &= PERMISSION_VIEW_CHANNEL | PERMISSION_READ_MESSAGE_HISTORY
        return permissions

    def is_timed_out(self, member: MemberRecord) -> bool:
        return member.timed_out_until is not None and member.timed_out_until > self.wall_now()

    def _thread_permissions(self, thread: Json, user_id: int) -> int:
        """A thread has its parent's permissions; a private one is seen only by the members
        added to it and by those with Manage Threads in the parent (Administrator has it)."""
        permissions = self.permissions_in(int(thread["parent_id"]), user_id)
        if (
            thread["type"] == CHANNEL_TYPE_PRIVATE_THREAD
            and not permissions & PERMISSION_MANAGE_THREADS
            and user_id not in self.thread_members[int(thread["id"])]
        ):
            return 0
        return permissions

    def open_dm(self, user_id: int) -> Json:
        if user_id not in self.dm_channel_by_user:
            channel_id = self.ids.next()
            self.dm_channel_by_user[user_id] = channel_id
            self.channels[channel_id] = dm_channel_payload(channel_id, self.user_json(user_id))
        return self.channels[self.dm_channel_by_user[user_id]]

    def channel(self, channel_id: int) -> Json:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise RequestRejected(
                404,
                10003,
                "Unknown Channel",
                (Violation.UNKNOWN_RESOURCE, f"channel {channel_id} does not exist"),
            ) from None

    def guild_id_of(self, channel_id: int) -> int | None:
        guild_id = self.channel(channel_id).get("guild_id")
        return None if guild_id is None else int(guild_id)

    # -- files -----------------------------------------------------------------------------

    def store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> StoredAttachment:
        attachment_id = self.ids.next()
        attachment = StoredAttachment(
            attachment_id=attachment_id,
            channel_id=channel_id,
            filename=filename,
            data=data,
            content_type=guess_content_type(filename, data),
            url=f"{self.origin}/attachments/{channel_id}/{attachment_id}/{filename}",
            description=description,
            ephemeral=ephemeral,
        )
        self.attachments[attachment_id] = attachment
        return attachment

    def upload_limit_in(self, channel_id: int) -> int:
        """A bot's own message's per-file limit in ``channel_id``."""
        if self.channel(channel_id)["type"] == CHANNEL_TYPE_DM:
            return self.direct_message_size_limit
        return self.attachment_size_limit

    def check_upload_sizes(self, uploads: list[UploadedFile], limit: int, where: str) -> None:
        if len(uploads) > MAX_FILES_PER_MESSAGE:
            raise RequestRejected(
                400,
                50035,
                "Invalid Form Body",
                (
                    Violation.INVALID_MESSAGE,
                    f"{where}: {len(uploads)} files; at most {MAX_FILES_PER_MESSAGE}",
                ),
            )
        for upload in uploads:
            if len(upload.data) > limit:
                raise RequestRejected(
                    413,
                    40005,
                    "Request entity too large",
                    (
                        Violation.FILE_TOO_LARGE,
                        f"{where}: {upload.filename!r} is {len(upload.data)} bytes; the limit "
                        f"for this upload is {limit} bytes",
                    ),
                )

    # -- messages --------------------------------------------------------------------------

    def new_message(self, channel_id: int, author: Json, *, message_type: int = 0) -> StoredMessage:
        message_id = self.ids.next()
        payload = message_payload(
            message_id=message_id,
            channel_id=channel_id,
            guild_id=self.guild_id_of(channel_id),
            author=author,
            created_at=self.wall_now(),
            message_type=message_type,
        )
        message = StoredMessage(payload, self.attachments)
        self.messages[message_id] = message
        self.channels[channel_id]["last_message_id"] = str(message_id)
        return message

    def message_in_channel(self, channel_id: int, message_id: int) -> StoredMessage:
        message = self.messages.get(message_id)
        if message is None or message.deleted or message.channel_id != channel_id:
            raise RequestRejected(
                404,
                10008,
                "Unknown Message",
                (
                    Violation.UNKNOWN_RESOURCE,
                    f"message {message_id} is not in channel {channel_id}",
                ),
            )
        return message

    def apply_message_body(
        self, message: StoredMessage, body: Json, uploads: list[UploadedFile], *, editing: bool
    ) -> None:
        """Writes a create/edit body (already validated) into the stored message."""
        payload = message.payload
        for key, empty in (("content", ""), ("embeds", []), ("components", [])):
            if key in body:
                payload[key] = empty if body[key] is None else body[key]
        requested_flags = int(body.get("flags") or 0) & FLAGS_A_CLIENT_MAY_SET
        if editing:
            # The ephemeral bit is fixed at creation; any edit ends a "thinking" state.
            if "flags" in body:
                ephemeral = payload["flags"] & FLAG_EPHEMERAL
                payload["flags"] = ephemeral | (requested_flags & ~FLAG_EPHEMERAL)
            payload["flags"] &= ~FLAG_LOADING
            payload["edited_timestamp"] = iso_timestamp(self.wall_now())
            message.edit_count += 1
        else:
            payload["flags"] = requested_flags
        payload["attachments"] = self._resolve_attachments(message, body, uploads, editing)
        self.feed.notify()

    def _resolve_attachments(
        self, message: StoredMessage, body: Json, uploads: list[UploadedFile], editing: bool
    ) -> list[Json]:
        existing = {int(a["id"]): a for a in message.payload["attachments"]} if editing else {}
        listed: list[Json] | None = body.get("attachments")
        by_index = {upload.index: upload for upload in uploads}
        ephemeral = message.is_ephemeral
        if listed is None:
            kept = list(existing.values())
            new_files = [
                self.store_file(message.channel_id, u.filename, u.data, ephemeral=ephemeral)
                for u in uploads
            ]
            return kept + [f.payload() for f in new_files]
        result: list[Json] = []
        used_indices: set[int] = set()
        for entry in listed:
            entry_id = int(entry["id"])
            if entry_id in existing:
                result.append(existing[entry_id])
            elif entry_id in by_index:
                upload = by_index[entry_id]
                used_indices.add(entry_id)
                stored = self.store_file(
                    message.channel_id,
                    entry.get("filename") or upload.filename,
                    upload.data,
                    description=entry.get("description"),
                    ephemeral=ephemeral,
                )
                result.append(stored.payload())
            else:
                raise RequestRejected(
                    400,
                    50035,
                    "Invalid Form Body",
                    (
                        Violation.INVALID_MESSAGE,
                        f"attachments entry id {entry_id} is neither an attachment of message "
                        f"{message.id} nor the index of an uploaded files[n] part "
                        f"(uploaded: {sorted(by_index)})",
                    ),
                )
        for index, upload in by_index.items():
            if index not in used_indices:
                stored = self.store_file(
                    message.channel_id, upload.filename, upload.data, ephemeral=ephemeral
                )
                result.append(stored.payload())
        return result

    # -- commands --------------------------------------------------------------------------

    def registered_commands(self, guild_id: int | None) -> list[Json]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.get(guild_id, [])

    def find_command(self, name: str, command_type: int, channel_id: int) -> Json:
        """The command as a user in ``channel_id`` sees it: that guild's commands shadow global
        ones, and a command whose contexts leave this place out is not offered at all."""
        guild_id = self.guild_id_of(channel_id)
        where = "a DM with the bot" if guild_id is None else f"guild {guild_id}"
        visible = [*self.guild_commands.get(guild_id or 0, []), *self.global_commands]
        for command in visible:
            if command["name"] == name and command.get("type", 1) == command_type:
                context = CONTEXT_GUILD if guild_id is not None else CONTEXT_BOT_DM
                allowed = command_contexts(command)
                if context not in allowed:
                    raise CommandNotShown(
                        f"{name!r} is not available in {where}: it was registered for contexts "
                        f"{allowed} (0 guild, 1 bot DM, 2 private channel); Discord's client "
                        "does not offer it there"
                    )
                return command
        registered = {
            "global": sorted((c["name"], c.get("type", 1)) for c in self.global_commands),
            **{
                f"guild {g}": sorted((c["name"], c.get("type", 1)) for c in commands)
                for g, commands in self.guild_commands.items()
            },
        }
        raise LookupError(
            f"no command {name!r} of type {command_type} is registered for {where}; the bot "
            f"synced (name, type): {registered} (did the bot call tree.sync()? guild commands "
            "exist only in their guild)"
        )

    def command_json(self, command: Json, guild_id: int | None) -> Json:
        """A registered command as Discord stores and returns it."""
        stored: Json = {
            "type": 1,
            "default_member_permissions": None,
            "nsfw": False,
            "options": [],
            **command,
            "id": str(self.ids.next()),
            "application_id": str(self.application_id),
            "version": str(self.ids.next()),
        }
        if stored["type"] != 1:
            stored.setdefault("description", "")
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored

    # -- interactions ----------------------------------------------------------------------

    def interaction(self, interaction_id: int, token: str) -> InteractionHandle:
        handle = self.interactions.get(interaction_id)
        if handle is None or handle.token != token:
            raise RequestRejected(
                404,
                10062,
                "Unknown interaction",
                (
                    Violation.UNKNOWN_INTERACTION,
                    f"callback for interaction {interaction_id} with a token the fake never issued",
                ),
            )
        return handle

    def interaction_by_token(self, token: str) -> InteractionHandle | None:
        return next((h for h in self.interactions.values() if h.token == token), None)


def command_contexts(command: Json) -> list[int]:
    """Where Discord offers a command: its ``contexts``, else what ``dm_permission`` implies.

    discord.py 2.7 sends ``contexts: null`` unless a command sets them; Discord then allows
    every context, except in DMs for a command sent with ``dm_permission: false``.
    """
    contexts = command.get("contexts")
    if contexts is not None:
        return sorted(int(c) for c in contexts)
    if command.get("dm_permission") is False or command.get("guild_id") is not None:
        return [CONTEXT_GUILD]
    return [CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL]
