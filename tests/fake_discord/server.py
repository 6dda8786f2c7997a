"""``FakeDiscord``: the loopback server plus the test-side API that plays the human users."""

# The test API takes timeout= by design: on expiry it explains what the fake saw,
# which a bare asyncio.timeout() around the call could not.
# ruff: noqa: ASYNC109

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from .gateway import Gateway
from .interactions import AttachmentInput, InteractionBuilder
from .payloads import (
    AUDIT_LOG_AUTO_MODERATION_USER_COMMUNICATION_DISABLED,
    AUDIT_LOG_MEMBER_KICK,
    AUDIT_LOG_MEMBER_UPDATE,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MODERATION,
    PERMISSION_ADMINISTRATOR,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_VIEW_AUDIT_LOG,
    PERMISSION_VIEW_CHANNEL,
    THREAD_TYPES,
    Json,
    Overwrite,
    StoredAttachment,
    iso_timestamp,
    member_payload,
    role_payload,
    thread_member_payload,
)
from .records import DEFAULT_WAIT_S, InteractionHandle, RateLimitRecord, RestCall, StoredMessage
from .rest import (
    API_PREFIX,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    RestApi,
)
from .state import DEFAULT_ATTACHMENT_SIZE_LIMIT, AddedGuild, DiscordState, RateLimitPlan

DEFAULT_HEARTBEAT_INTERVAL_MS = 41_250
MAX_REQUEST_BYTES = 64 * 1024 * 1024
LISTEN_BACKLOG = 1024


class FakeDiscord:
    """Discord REST v10 + Gateway v10 on 127.0.0.1, for an unmodified discord.py client.

    One guild (``guild_id``) with one text channel (``channel_id``), roles ``@everyone``,
    ``Member`` and ``Moderator``, the bot, a default human ``tester`` and the ``owner``.
    More guilds (``add_guild``), channels with permission overwrites, and DMs on request.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        port: int = 0,
    ) -> None:
        self._port = port  # 0: any free one, known once started
        self._state = DiscordState(token=token, attachment_size_limit=attachment_size_limit)
        self._gateway = Gateway(self._state, heartbeat_interval_ms=heartbeat_interval_ms)
        self._rest = RestApi(self._state, self._gateway)
        self._builder = InteractionBuilder(self._state)
        self._runner: web.AppRunner | None = None
        if port:
            self._listening_on(port)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(
            middlewares=[self._rest.middleware], client_max_size=MAX_REQUEST_BYTES
        )
        app.add_routes([web.get("/gateway", self._gateway.handle), *self._rest.routes()])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # aiohttp's default backlog (128) overflows when a burst of interactions is answered
        # at once (discord.py opens a connection per concurrent request): the connections
        # past it wait for a SYN retry, a second later. Discord's own edge has no such limit.
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, backlog=LISTEN_BACKLOG)
        await site.start()
        self._listening_on(self._runner.addresses[0][1])
        return self

    def _listening_on(self, port: int) -> None:
        self._state.origin = f"http://127.0.0.1:{port}"
        self._gateway.url = f"ws://127.0.0.1:{port}/gateway"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._gateway.close()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- where and who ---------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"{self._state.origin}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return self._gateway.url

    @property
    def token(self) -> str:
        return self._state.token

    @property
    def application_id(self) -> int:
        return self._state.application_id

    @property
    def bot_user_id(self) -> int:
        return self._state.bot_user_id

    @property
    def guild_id(self) -> int:
        return self._state.guild_id

    @property
    def channel_id(self) -> int:
        return self._state.channel_id

    @property
    def user_id(self) -> int:
        """The default human member who runs commands and clicks buttons."""
        return self._state.tester_id

    @property
    def owner_id(self) -> int:
        return self._state.owner_id

    @property
    def member_role_id(self) -> int:
        return self._state.member_role_id

    @property
    def moderator_role_id(self) -> int:
        return self._state.moderator_role_id

    @property
    def gateway(self) -> Gateway:
        """Counters (``identify_count``, ``resume_count``, ``heartbeat_count``) and the session."""
        return self._gateway

    def add_member(
        self,
        user_id: int,
        name: str,
        roles: Sequence[int] = (),
        permissions: int | None = None,
        *,
        guild: int | None = None,
    ) -> None:
        """A human member of ``guild`` (default: the first); ``permissions`` (the guild-wide
        base) defaults to the union of @everyone's and the roles' permissions."""
        record = self._state.add_member(user_id, name, tuple(roles), permissions, guild_id=guild)
        guild_id = self._state.guild(guild).guild_id
        if self._gateway.intents & INTENT_GUILD_MEMBERS:  # Discord sends it only with the intent
            self._gateway.dispatch_later(
                "GUILD_MEMBER_ADD", {**member_payload(record), "guild_id": str(guild_id)}
            )

    def add_guild(self, name: str, *, owner: int | None = None) -> AddedGuild:
        """Another guild the bot is in: @everyone, a ``Member`` role, its owner (a new user
        unless ``owner`` names a known one) and a ``general`` channel. Add people with
        ``add_member(..., guild=added.guild_id)``. Sent as GUILD_CREATE if the bot is online."""
        added = self._state.add_guild(name, owner)
        self._gateway.dispatch_later(
            "GUILD_CREATE", self._state.guild_json(with_members=False, guild_id=added.guild_id)
        )
        return added

    def add_role(self, name: str, permissions: int, *, guild: int | None = None) -> int:
        """A role of ``guild`` (default: the first) granting ``permissions`` server-wide; its
        id. Sent as GUILD_ROLE_CREATE if the bot is online."""
        guild_id = self._state.guild(guild).guild_id
        role = self._state.add_role(name, permissions, guild_id=guild_id)
        self._gateway.dispatch_later(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role_payload(role)}
        )
        return role.role_id

    def add_text_channel(
        self,
        name: str,
        *,
        guild: int | None = None,
        visible_to: Sequence[int] | None = None,
        overwrites: Sequence[Overwrite] = (),
        nsfw: bool = False,
    ) -> int:
        """A text channel in ``guild`` (default: the first).

        ``visible_to``: role or user ids that may see it (and the bot); everyone else is denied
        View Channel by an @everyone overwrite. ``overwrites``: any others, Discord's model.
        """
        guild_id = self._state.guild(guild).guild_id
        hidden: list[Overwrite] = []
        if visible_to is not None:
            hidden.append(Overwrite(guild_id, deny=PERMISSION_VIEW_CHANNEL))
            for target in [*visible_to, self.bot_user_id]:
                is_role = target in self._state.guild(guild_id).roles
                hidden.append(
                    Overwrite(
                        target,
                        allow=PERMISSION_VIEW_CHANNEL | PERMISSION_READ_MESSAGE_HISTORY,
                        member=not is_role,
                    )
                )
        channel_id = self._state.add_text_channel(
            name, guild_id=guild_id, overwrites=(*hidden, *overwrites), nsfw=nsfw
        )
        self._gateway.dispatch_later("CHANNEL_CREATE", self._state.channel(channel_id))
        return channel_id

    def add_thread(
        self,
        name: str,
        *,
        parent: int | None = None,
        private: bool = False,
        owner: int | None = None,
        members: Sequence[int] = (),
    ) -> int:
        """A thread of the text channel ``parent`` (default: ``channel_id``), started by
        ``owner`` (default: the tester), who is its first member with ``members``. A private
        one (type 12) is seen only by its members and by members with Manage Threads in the
        parent; a public one (type 11) by whoever sees the parent. Sent as THREAD_CREATE if
        the bot is online and can see it."""
        thread_id = self._state.add_thread(
            self.channel_id if parent is None else parent,
            name,
            private=private,
            owner_id=self.user_id if owner is None else owner,
            members=tuple(members),
        )
        if self.permissions_in(thread_id, self.bot_user_id):
            thread = self._state.channel(thread_id)
            self._gateway.dispatch_later("THREAD_CREATE", {**thread, "newly_created": True})
        return thread_id

    def set_thread_member(self, thread_id: int, user_id: int, *, member: bool = True) -> None:
        """Adds ``user_id`` to the thread (or removes them, ``member=False``); sent as
        THREAD_MEMBERS_UPDATE with the members intent, or without it when the bot itself is
        added or removed, as Discord does."""
        thread = self._state.set_thread_member(thread_id, user_id, member=member)
        if self._gateway.intents & INTENT_GUILD_MEMBERS or user_id == self.bot_user_id:
            change: Json = {"id": thread["id"], "guild_id": thread["guild_id"]}
            if member:
                joined_at = self._state.thread_members[thread_id][user_id]
                change["added_members"] = [thread_member_payload(thread_id, user_id, joined_at)]
            else:
                change["removed_member_ids"] = [str(user_id)]
            change["member_count"] = thread["member_count"]
            self._gateway.dispatch_later("THREAD_MEMBERS_UPDATE", change)

    def set_overwrite(
        self,
        channel_id: int,
        target_id: int,
        *,
        allow: int = 0,
        deny: int = 0,
        member: bool | None = None,
    ) -> None:
        """Sets the channel's overwrite for a role or member (``member`` defaults to "not a
        role of the guild"), replacing any earlier one for the same target."""
        guild_id = self._state.guild_id_of(channel_id)
        if member is None:
            member = guild_id is None or target_id not in self._state.guild(guild_id).roles
        channel = self._state.set_overwrite(
            channel_id, Overwrite(target_id, allow=allow, deny=deny, member=member)
        )
        self._gateway.dispatch_later("CHANNEL_UPDATE", channel)

    def set_nsfw(self, channel_id: int, nsfw: bool) -> None:
        """A moderator turns the channel's age restriction on or off (Edit Channel)."""
        channel = self._state.channel(channel_id)
        channel["nsfw"] = nsfw
        self._gateway.dispatch_later("CHANNEL_UPDATE", channel)

    def permissions_in(self, channel_id: int, user_id: int) -> int:
        """What Discord computes for ``user_id`` in ``channel_id``: roles, owner, Administrator,
        then overwrites (@everyone, roles, member). 0 where they cannot view the channel."""
        return self._state.permissions_in(channel_id, user_id)

    # -- what happened ---------------------------------------------------------------------

    @property
    def violations(self) -> list[str]:
        """Rules the bot broke, each ``"<kind>: <detail>"``; kinds are ``rules.Violation``."""
        return self._state.violations

    def take_violations(self) -> list[str]:
        """Returns and clears the violations, for tests that provoke them on purpose."""
        taken = list(self._state.violations)
        self._state.violations.clear()
        return taken

    @property
    def calls(self) -> list[RestCall]:
        return self._state.calls

    def calls_to(self, method: str, route: str) -> list[RestCall]:
        """Calls on one route template, e.g. ``("POST", "/channels/{channel}/messages")``."""
        return [c for c in self._state.calls if (c.method, c.route) == (method, route)]

    @property
    def rate_limits(self) -> list[RateLimitRecord]:
        return self._state.rate_limit_log

    @property
    def messages(self) -> Mapping[int, StoredMessage]:
        return self._state.messages

    def registered_commands(self, *, guild: bool | int = False) -> list[Json]:
        """Global commands, or those of a guild (``True``: the first guild)."""
        if guild is False:
            return self._state.registered_commands(None)
        return self._state.registered_commands(self.guild_id if guild is True else guild)

    def attachment(self, attachment_id: int) -> StoredAttachment:
        return self._state.attachments[attachment_id]

    # -- test controls ---------------------------------------------------------------------

    def advance_time(self, seconds: float) -> None:
        """Moves the fake's clock forward (interaction deadlines and token lifetimes use it)."""
        self._state.clock_offset += seconds

    def reencode_pictures_on_download(self, reencode: bool = True) -> None:
        """Serve PNG attachments as WebP without their text chunks (Easel's infotext), as
        Discord's media proxy may; ``StoredAttachment.data`` keeps what was uploaded."""
        self._state.cdn_reencodes_pictures = reencode

    def cdn_bytes_served(self, attachment_id: int) -> int:
        """How many bytes of an attachment its last download was sent before the reader
        stopped (0: never downloaded)."""
        return self._state.cdn_bytes_served.get(attachment_id, 0)

    def dm_channel_of(self, user_id: int) -> int:
        """The id of the direct-message channel with ``user_id`` (opened if needed)."""
        return int(self._state.open_dm(user_id)["id"])

    def set_upload_limits(self, *, server: int, direct_messages: int) -> None:
        """Per-file upload limits in bytes: a bot's own message's in the server's channels
        (and an interaction's unless ``invoke_command`` names one), and in direct messages."""
        self._state.attachment_size_limit = server
        self._state.direct_message_size_limit = direct_messages

    def revoke_send_messages(self, channel_id: int) -> None:
        """The bot loses Send Messages in ``channel_id``: posts there get 403 (code 50013)."""
        self._state.channels_without_send.add(channel_id)

    def reset_token(self, token: str) -> None:
        """The operator reset the bot's token to ``token`` in the Developer Portal: a REST call
        with any other is refused (401, code 0), as is an IDENTIFY (closed 4004)."""
        self._state.token = token

    def rate_limit(
        self,
        method: str,
        route: str,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> None:
        """Answers the next ``times`` calls on ``method route`` with 429 + ``retry_after``.

        ``route`` is the template without the API prefix, as in ``RestCall.route``:
        ``"/channels/{channel}/messages"``.
        """
        known = self._rest.route_keys()
        if (method, route) not in known:
            raise ValueError(
                f"{method} {route} is not a route the fake serves; known: {sorted(known)}"
            )
        self._state.rate_limit_plans[(method, route)] = RateLimitPlan(times, retry_after, is_global)

    def fail(
        self, method: str, route: str, *, times: int = 1, status: int = 503, landed: bool = False
    ) -> None:
        """Answers the next ``times`` calls on ``method route`` with Discord's server error
        ``status`` (discord.py's REST calls retry 500, 502 and 504 for seconds and a 503
        reaches the caller; its webhook calls retry every 5xx, with waits cut to a hundredth
        in tests except an interaction's first response: tests/support/discord_retries.py),
        or with none: ``CONNECTION_DROPPED`` closes the connection (aiohttp sends a GET again
        once on a new one, then its ServerDisconnectedError reaches the caller: plan two).
        ``landed``: each call takes effect first, only its answer is lost (a Cloudflare 502
        after Discord acted): a client that sends it again asks for it twice."""
        known = self._rest.route_keys()
        if (method, route) not in known:
            raise ValueError(
                f"{method} {route} is not a route the fake serves; known: {sorted(known)}"
            )
        self._state.outage_plans[(method, route)] = (times, status, landed)

    async def wait_until_identified(
        self, timeout: float = DEFAULT_WAIT_S, *, times: int = 1
    ) -> None:
        """Until a bot is connected, the fake having taken ``times`` IDENTIFYs in all (2: a bot
        started after another's, not that one's connection)."""
        gateway = self._gateway
        await self._state.feed.wait_until(
            lambda: True if gateway.connection and gateway.identify_count >= times else None,
            timeout,
            lambda: f"no bot identified on {self.gateway_url} ({gateway.identify_count} so far)",
        )

    async def wait_for_resume(self, count: int = 1, timeout: float = DEFAULT_WAIT_S) -> None:
        """Waits until the gateway has accepted ``count`` RESUMEs in all."""
        await self._state.feed.wait_until(
            lambda: (
                True if self._gateway.resume_count >= count and self._gateway.connection else None
            ),
            timeout,
            lambda: f"{self._gateway.resume_count} RESUMEs so far, waiting for {count}",
        )

    async def drop_gateway_connection(self, code: int = 4000, *, resumable: bool = True) -> None:
        """Closes the bot's websocket; discord.py reconnects and RESUMEs. Not ``resumable``:
        the session is forgotten first, so the RESUME is refused and discord.py IDENTIFYs
        afresh (a READY: it builds every server's objects anew)."""
        if not resumable:
            self._gateway.session = None
        await self._gateway.drop_connection(code)

    async def request_reconnect(self) -> None:
        await self._gateway.request_reconnect()

    async def wait_for_channel_message(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = DEFAULT_WAIT_S,
        *,
        channel: int | None = None,
    ) -> StoredMessage:
        """The first message in ``channel`` (default: the guild channel) matching ``predicate``."""
        channel_id = self.channel_id if channel is None else channel

        def check() -> StoredMessage | None:
            for message in self._state.messages.values():
                in_channel = message.channel_id == channel_id and not message.deleted
                if in_channel and (predicate is None or predicate(message)):
                    return message
            return None

        def explain() -> str:
            in_channel = [m for m in self._state.messages.values() if m.channel_id == channel_id]
            return f"no matching message in channel {channel_id}; it holds {in_channel}"

        return await self._state.feed.wait_until(check, timeout, explain)

    # -- acting as users -------------------------------------------------------------------

    async def invoke_command(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: int | None = None,
        attachments: Mapping[str, AttachmentInput] | None = None,
        channel: int | None = None,
        subcommand: str | Sequence[str] = (),
        attachment_size_limit: int | None = None,
    ) -> InteractionHandle:
        """Runs ``/name`` (or ``"/group sub"`` via spaces or ``subcommand``) as ``user``."""
        path = self._command_path(name, subcommand)
        channel_id = self.channel_id if channel is None else channel
        inputs = {**(options or {}), **(attachments or {})}
        data = self._builder.slash_command_data(
            path, inputs, channel_id=channel_id, user_id=self._user(user)
        )
        return await self._dispatch(
            INTERACTION_APPLICATION_COMMAND,
            data,
            label=f"/{' '.join(path)}",
            user=user,
            channel_id=channel_id,
            attachment_size_limit=attachment_size_limit,
        )

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        user: int | None = None,
        channel: int | None = None,
        subcommand: str | Sequence[str] = (),
        timeout: float = DEFAULT_WAIT_S,
    ) -> list[Json]:
        """Types into option ``focused`` (its value in ``options`` is the partial text)."""
        path = self._command_path(name, subcommand)
        channel_id = self.channel_id if channel is None else channel
        data = self._builder.slash_command_data(
            path, options, channel_id=channel_id, user_id=self._user(user), focused=focused
        )
        handle = await self._dispatch(
            INTERACTION_AUTOCOMPLETE,
            data,
            label=f"autocomplete /{' '.join(path)} {focused}",
            user=user,
            channel_id=channel_id,
        )
        return await handle.wait_for_autocomplete(timeout)

    async def click(
        self,
        message: StoredMessage | int,
        custom_id: str | None = None,
        *,
        label: str | None = None,
        user: int | None = None,
        values: Sequence[str] | None = None,
    ) -> InteractionHandle:
        """Clicks a button (by ``custom_id`` or ``label``) or picks select ``values``."""
        stored = self._message(message)
        if custom_id is None:
            if label is None:
                raise ValueError("click() needs a custom_id or a label")
            custom_id = str(stored.component(label=label)["custom_id"])
        data = self._builder.component_data(
            stored, custom_id, None if values is None else list(values)
        )
        return await self._dispatch(
            INTERACTION_MESSAGE_COMPONENT,
            data,
            label=f"click {custom_id!r} on message {stored.id}",
            user=user,
            channel_id=stored.channel_id,
            message=stored,
        )

    async def invoke_message_command(
        self, name: str, message: StoredMessage | int, *, user: int | None = None
    ) -> InteractionHandle:
        """Runs the message context-menu command ``name`` on ``message``."""
        stored = self._message(message)
        data = self._builder.message_command_data(name, stored)
        return await self._dispatch(
            INTERACTION_APPLICATION_COMMAND,
            data,
            label=f"message command {name!r} on {stored.id}",
            user=user,
            channel_id=stored.channel_id,
        )

    async def invoke_user_command(
        self, name: str, target_user: int, *, user: int | None = None, channel: int | None = None
    ) -> InteractionHandle:
        channel_id = self.channel_id if channel is None else channel
        data = self._builder.user_command_data(name, target_user, channel_id)
        return await self._dispatch(
            INTERACTION_APPLICATION_COMMAND,
            data,
            label=f"user command {name!r} on {target_user}",
            user=user,
            channel_id=channel_id,
        )

    async def submit_modal(
        self, opened_by: InteractionHandle, values: Mapping[str, str], *, user: int | None = None
    ) -> InteractionHandle:
        """Fills in and submits the modal the bot answered ``opened_by`` with."""
        if opened_by.modal is None:
            raise ValueError(f"the bot has not answered with a modal: {opened_by.describe()}")
        data = self._builder.modal_submit_data(opened_by.modal, values)
        source = opened_by.source_message_id
        return await self._dispatch(
            INTERACTION_MODAL_SUBMIT,
            data,
            label=f"modal {opened_by.modal['custom_id']!r}",
            user=user,
            channel_id=opened_by.channel_id,
            message=None if source is None else self._state.messages[source],
        )

    async def post_user_message(
        self,
        content: str,
        *,
        user: int | None = None,
        attachments: Sequence[tuple[str, bytes]] = (),
        channel: int | None = None,
    ) -> StoredMessage:
        """A message typed by a human, e.g. an image to run a message command on."""
        channel_id = self.channel_id if channel is None else channel
        author = self._state.user_json(self.user_id if user is None else user)
        message = self._state.new_message(channel_id, author)
        message.payload["content"] = content
        message.payload["attachments"] = [
            self._state.store_file(channel_id, filename, data).payload()
            for filename, data in attachments
        ]
        if self._gateway.session is not None:
            await self._rest.announce("MESSAGE_CREATE", message)
        self._state.feed.notify()
        return message

    async def delete_messages(self, *messages: StoredMessage) -> None:
        """Messages of one channel deleted in Discord's client (by a moderator, say): one is
        announced as MESSAGE_DELETE, several as MESSAGE_DELETE_BULK (what a purge sends)."""
        [channel_id] = {message.channel_id for message in messages}
        if len(messages) == 1:
            await self._rest.delete_message(messages[0])
            return
        for message in messages:
            message.deleted = True
        self._state.feed.notify()
        if self._rest.gateway_sees(messages[0]):
            event = {
                "ids": [str(message.id) for message in messages],
                "channel_id": str(channel_id),
            }
            guild_id = messages[0].payload.get("guild_id")
            if guild_id is not None:
                event["guild_id"] = guild_id
            await self._gateway.dispatch("MESSAGE_DELETE_BULK", event)

    async def delete_channel(self, channel_id: int) -> None:
        """A moderator deletes a server's channel or thread, its messages (and a channel's
        threads) with it. A bot that sees it is told CHANNEL_DELETE (the channel) or
        THREAD_DELETE (its id, server, parent and type), and of no message, as on Discord."""
        channel = self._state.channel(channel_id)
        seen = bool(self.permissions_in(channel_id, self.bot_user_id))
        threads = {
            int(thread["id"])
            for thread in self._state.channels.values()
            if thread.get("parent_id") == str(channel_id)
        }
        gone = {channel_id, *threads}
        for message in self._state.messages.values():
            if message.channel_id in gone:
                message.deleted = True
        for gone_id in gone:
            del self._state.channels[gone_id]
        self._state.feed.notify()
        if not seen:
            return
        if channel["type"] in THREAD_TYPES:
            fields = ("id", "guild_id", "parent_id", "type")
            await self._gateway.dispatch("THREAD_DELETE", {key: channel[key] for key in fields})
        else:
            await self._gateway.dispatch("CHANNEL_DELETE", channel)

    async def archive_thread(self, thread_id: int, *, locked: bool = False) -> None:
        """The thread goes quiet and Discord archives it: THREAD_UPDATE to a bot that sees it
        (discord.py then forgets it, so a deletion of its channel announces it no more).
        ``locked``: a moderator locked it too, so posting there is refused (400 50083)."""
        thread = self._state.channel(thread_id)
        thread["thread_metadata"]["archived"] = True
        thread["thread_metadata"]["locked"] = locked
        if self.permissions_in(thread_id, self.bot_user_id):
            await self._gateway.dispatch("THREAD_UPDATE", thread)

    async def guild_outage(self, *, guild: int | None = None) -> None:
        """``guild`` (default: the first) goes down in a Discord outage and comes back: GUILD_DELETE
        with ``unavailable: true``, then GUILD_CREATE as it is now. Nothing that happened there
        meanwhile is sent: make it so before the call, unannounced (``message.deleted = True``)."""
        guild_id = self._state.guild(guild).guild_id
        await self._gateway.dispatch("GUILD_DELETE", {"id": str(guild_id), "unavailable": True})
        await self.guild_available(guild=guild_id)

    async def add_bot(
        self, name: str, *, owner: int | None = None, unavailable: bool = False
    ) -> AddedGuild:
        """The owner of a new guild ``name`` adds the online bot to it: as ``add_guild``, its
        GUILD_CREATE sent now, without ``unavailable`` as Discord sends a join's (discord.py's
        ``on_guild_join``; with ``unavailable: false`` it reads as an outage's end).
        ``unavailable``: Discord reports the guild unavailable as it joins (a GUILD_CREATE
        saying only that, which discord.py ignores); ``guild_available`` ends that."""
        added = self._state.add_guild(name, owner)
        if unavailable:
            event = {"id": str(added.guild_id), "unavailable": True}
            await self._gateway.dispatch("GUILD_CREATE", event)
        else:
            await self._send_guild_create(added.guild_id, joined=True)
        return added

    async def guild_available(self, *, guild: int | None = None) -> None:
        """``guild`` (default: the first) is available again: GUILD_CREATE as it is now, with
        ``unavailable: false`` (discord.py's ``on_guild_available``)."""
        await self._send_guild_create(self._state.guild(guild).guild_id)

    async def _send_guild_create(self, guild_id: int, *, joined: bool = False) -> None:
        """GUILD_CREATE as the guild is now (its members only with the members intent)."""
        with_members = bool(self._gateway.intents & INTENT_GUILD_MEMBERS)
        guild = self._state.guild_json(with_members=with_members, guild_id=guild_id)
        if joined:
            del guild["unavailable"]
        await self._gateway.dispatch("GUILD_CREATE", guild)

    async def remove_bot(self, *, guild: int | None = None) -> None:
        """The owner of ``guild`` (default: the first) removes Easel from it (kicks the bot,
        or deletes the server): the bot is no longer a member there and gets GUILD_DELETE
        without ``unavailable``; a later READY no longer lists the guild."""
        await self._rest.bot_removed(self._state.guild(guild).guild_id)

    def set_bot_public(self, public: bool) -> None:
        """The application's Public Bot toggle (on by default), as
        ``GET /oauth2/applications/@me`` says it (``bot_public``)."""
        self._state.bot_public = public

    async def ban_member(self, user_id: int, *, guild: int | None = None) -> None:
        """A moderator bans ``user_id`` from ``guild`` (default: the first), deleting none of
        their messages: GUILD_BAN_ADD with the moderation intent, then (they are no longer a
        member there) GUILD_MEMBER_REMOVE with the members intent, in Discord's order, which
        discord.py's ban handler relies on to find the member still cached."""
        guild_id = self._state.guild(guild).guild_id
        event = {"guild_id": str(guild_id), "user": self._state.ban(user_id, guild_id)}
        if self._gateway.intents & INTENT_GUILD_MODERATION:
            await self._gateway.dispatch("GUILD_BAN_ADD", event)
        if self._gateway.intents & INTENT_GUILD_MEMBERS:
            await self._gateway.dispatch("GUILD_MEMBER_REMOVE", event)

    async def unban_member(self, user_id: int, *, guild: int | None = None) -> None:
        """A moderator lifts ``user_id``'s ban from ``guild`` (default: the first):
        GUILD_BAN_REMOVE with the moderation intent (discord.py's ``on_member_unban``). They
        are not a member again until they join (``add_member``: GUILD_MEMBER_ADD with the
        members intent); a banned user's ``add_member`` raises."""
        guild_id = self._state.guild(guild).guild_id
        event = {"guild_id": str(guild_id), "user": self._state.unban(user_id, guild_id)}
        if self._gateway.intents & INTENT_GUILD_MODERATION:
            await self._gateway.dispatch("GUILD_BAN_REMOVE", event)

    async def kick_member(self, user_id: int, *, guild: int | None = None) -> None:
        """The guild's owner kicks ``user_id``: Discord announces no kick event of its own,
        only the audit log entry (GUILD_AUDIT_LOG_ENTRY_CREATE, MEMBER_KICK) to bots with the
        moderation intent and View Audit Log, and GUILD_MEMBER_REMOVE with the members
        intent."""
        guild_id = self._state.guild(guild).guild_id
        self._state.remove_member(user_id, guild_id)
        await self._announce_audit_entry(guild_id, AUDIT_LOG_MEMBER_KICK, user_id, [])
        if self._gateway.intents & INTENT_GUILD_MEMBERS:
            event = {"guild_id": str(guild_id), "user": self._state.user_json(user_id)}
            await self._gateway.dispatch("GUILD_MEMBER_REMOVE", event)

    async def time_out_member(
        self, user_id: int, until: float | None, *, guild: int | None = None
    ) -> None:
        """The guild's owner times ``user_id`` out until ``until`` (epoch seconds; None
        removes the timeout): the member's ``communication_disabled_until`` and permissions
        change at once; announced as GUILD_MEMBER_UPDATE (members intent) and as the audit log
        entry MEMBER_UPDATE naming the change (moderation intent and View Audit Log)."""
        guild_id = self._state.guild(guild).guild_id
        member = self._state.member(user_id, guild_id)
        before, member.timed_out_until = member.timed_out_until, until
        change: Json = {"key": "communication_disabled_until"}
        for key, value in (("old_value", before), ("new_value", until)):
            if value is not None:  # Discord leaves out a side that is null
                change[key] = iso_timestamp(value)
        if self._gateway.intents & INTENT_GUILD_MEMBERS:
            await self._gateway.dispatch(
                "GUILD_MEMBER_UPDATE", {**member_payload(member), "guild_id": str(guild_id)}
            )
        await self._announce_audit_entry(guild_id, AUDIT_LOG_MEMBER_UPDATE, user_id, [change])

    async def automod_time_out_member(
        self, user_id: int, until: float, *, guild: int | None = None
    ) -> None:
        """AutoMod times ``user_id`` out until ``until`` (epoch seconds) for a message in the
        guild's first channel: the member's ``communication_disabled_until`` changes, and the
        audit log entry is AUTO_MODERATION_USER_COMMUNICATION_DISABLED, naming the rule and
        the channel but no change (so no end)."""
        guild_id = self._state.guild(guild).guild_id
        member = self._state.member(user_id, guild_id)
        member.timed_out_until = until
        if self._gateway.intents & INTENT_GUILD_MEMBERS:
            await self._gateway.dispatch(
                "GUILD_MEMBER_UPDATE", {**member_payload(member), "guild_id": str(guild_id)}
            )
        options = {
            "auto_moderation_rule_name": "no spam",
            "auto_moderation_rule_trigger_type": "3",  # spam
            "channel_id": str(self._state.channel_id),
        }
        await self._announce_audit_entry(
            guild_id,
            AUDIT_LOG_AUTO_MODERATION_USER_COMMUNICATION_DISABLED,
            user_id,
            [],
            options=options,
        )

    def grant_permissions(
        self, user_id: int, permissions: int, *, guild: int | None = None
    ) -> None:
        """Adds guild-wide ``permissions`` to a member's (the bot's: View Audit Log, say)."""
        self._state.member(user_id, self._state.guild(guild).guild_id).permissions |= permissions

    # -- internals -------------------------------------------------------------------------

    async def _announce_audit_entry(
        self,
        guild_id: int,
        action_type: int,
        target_id: int,
        changes: list[Json],
        *,
        options: Json | None = None,
    ) -> None:
        """GUILD_AUDIT_LOG_ENTRY_CREATE, made by the guild's owner, sent only to a bot with the
        moderation intent and View Audit Log (or Administrator) there."""
        bot = self._state.member(self._state.bot_user_id, guild_id)
        if not self._gateway.intents & INTENT_GUILD_MODERATION:
            return
        if not bot.permissions & (PERMISSION_VIEW_AUDIT_LOG | PERMISSION_ADMINISTRATOR):
            return
        entry: Json = {
            "id": str(self._state.ids.next()),
            "guild_id": str(guild_id),
            "action_type": action_type,
            "target_id": str(target_id),
            "user_id": str(self._state.guild(guild_id).owner_id),
            "changes": changes,
        }
        if options is not None:
            entry["options"] = options
        await self._gateway.dispatch("GUILD_AUDIT_LOG_ENTRY_CREATE", entry)

    def _user(self, user: int | None) -> int:
        return self.user_id if user is None else user

    def _command_path(self, name: str, subcommand: str | Sequence[str]) -> list[str]:
        extra = subcommand.split() if isinstance(subcommand, str) else list(subcommand)
        return [*name.removeprefix("/").split(), *extra]

    def _message(self, message: StoredMessage | int) -> StoredMessage:
        message_id = message if isinstance(message, int) else message.id
        try:
            return self._state.messages[message_id]
        except KeyError:
            raise LookupError(f"the fake holds no message {message_id}") from None

    async def _dispatch(
        self,
        interaction_type: int,
        data: Json,
        *,
        label: str,
        user: int | None,
        channel_id: int,
        message: StoredMessage | None = None,
        attachment_size_limit: int | None = None,
    ) -> InteractionHandle:
        interaction_id = self._state.ids.next()
        token = f"itok-{secrets.token_urlsafe(24)}"
        limit = (
            self._state.attachment_size_limit
            if attachment_size_limit is None
            else attachment_size_limit
        )
        payload = self._builder.envelope(
            interaction_type,
            data,
            interaction_id=interaction_id,
            token=token,
            user_id=self.user_id if user is None else user,
            channel_id=channel_id,
            message=message,
            attachment_size_limit=limit,
        )
        handle = InteractionHandle(
            interaction_id=interaction_id,
            token=token,
            interaction_type=interaction_type,
            label=label,
            channel_id=channel_id,
            payload=payload,
            created_at=self._state.now(),
            source_message_id=None if message is None else message.id,
            feed=self._state.feed,
            messages=self._state.messages,
            violations=self._state.violations,
        )
        self._state.interactions[interaction_id] = handle
        await self._gateway.dispatch("INTERACTION_CREATE", payload)
        return handle
