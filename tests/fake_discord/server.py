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
from .payloads import Json, StoredAttachment
from .records import DEFAULT_WAIT_S, InteractionHandle, RateLimitRecord, RestCall, StoredMessage
from .rest import (
    API_PREFIX,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_MESSAGE_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    RestApi,
)
from .state import DEFAULT_ATTACHMENT_SIZE_LIMIT, DiscordState, RateLimitPlan

DEFAULT_HEARTBEAT_INTERVAL_MS = 41_250
MAX_REQUEST_BYTES = 64 * 1024 * 1024


class FakeDiscord:
    """Discord REST v10 + Gateway v10 on 127.0.0.1, for an unmodified discord.py client.

    One guild (``guild_id``) with one text channel (``channel_id``), roles ``@everyone``,
    ``Member`` and ``Moderator``, the bot, a default human ``tester`` and the ``owner``.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    ) -> None:
        self._state = DiscordState(token=token, attachment_size_limit=attachment_size_limit)
        self._gateway = Gateway(self._state, heartbeat_interval_ms=heartbeat_interval_ms)
        self._rest = RestApi(self._state, self._gateway)
        self._builder = InteractionBuilder(self._state)
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(
            middlewares=[self._rest.middleware], client_max_size=MAX_REQUEST_BYTES
        )
        app.add_routes([web.get("/gateway", self._gateway.handle), *self._rest.routes()])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._state.origin = f"http://127.0.0.1:{port}"
        self._gateway.url = f"ws://127.0.0.1:{port}/gateway"
        return self

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
    ) -> None:
        """A human member; ``permissions`` defaults to the union of the roles' permissions."""
        self._state.add_member(user_id, name, tuple(roles), permissions)

    def add_text_channel(self, name: str) -> int:
        return self._state.add_text_channel(name)

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

    def registered_commands(self, *, guild: bool = False) -> list[Json]:
        return self._state.registered_commands(self.guild_id if guild else None)

    def attachment(self, attachment_id: int) -> StoredAttachment:
        return self._state.attachments[attachment_id]

    # -- test controls ---------------------------------------------------------------------

    def advance_time(self, seconds: float) -> None:
        """Moves the fake's clock forward (interaction deadlines and token lifetimes use it)."""
        self._state.clock_offset += seconds

    def dm_channel_of(self, user_id: int) -> int:
        """The id of the direct-message channel with ``user_id`` (opened if needed)."""
        return int(self._state.open_dm(user_id)["id"])

    def revoke_send_messages(self, channel_id: int) -> None:
        """The bot loses Send Messages in ``channel_id``: posts there get 403 (code 50013)."""
        self._state.channels_without_send.add(channel_id)

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

    async def wait_until_identified(self, timeout: float = DEFAULT_WAIT_S) -> None:
        await self._state.feed.wait_until(
            lambda: True if self._gateway.connection is not None else None,
            timeout,
            lambda: f"no bot identified on {self.gateway_url}",
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

    async def drop_gateway_connection(self, code: int = 4000) -> None:
        """Closes the bot's websocket; discord.py reconnects and RESUMEs."""
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
        data = self._builder.slash_command_data(path, inputs, channel_id=channel_id)
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
            path, options, channel_id=channel_id, focused=focused
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
        data = self._builder.user_command_data(name, target_user)
        return await self._dispatch(
            INTERACTION_APPLICATION_COMMAND,
            data,
            label=f"user command {name!r} on {target_user}",
            user=user,
            channel_id=self.channel_id if channel is None else channel,
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

    # -- internals -------------------------------------------------------------------------

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
