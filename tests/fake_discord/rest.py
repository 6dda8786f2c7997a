"""REST API v10: the routes discord.py calls for a slash-command bot, with Discord's answers."""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import BodyPartReader, web
from PIL import Image

from .gateway import Gateway
from .payloads import (
    CHANNEL_TYPE_DM,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    PERMISSION_MANAGE_THREADS,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_SEND_MESSAGES,
    PERMISSION_VIEW_CHANNEL,
    Json,
    member_payload,
)
from .records import InteractionHandle, RateLimitRecord, RestCall, StoredMessage, UploadedFile
from .rules import (
    Violation,
    autocomplete_problems,
    command_list_problems,
    empty_message_problem,
    message_problems,
    modal_problems,
)
from .state import CONNECTION_DROPPED, DiscordState, RequestRejected

API_PREFIX = "/api/v10"
ACK_DEADLINE_S = 3.0
TOKEN_LIFETIME_S = 15 * 60
# asyncio may wake a sleeper up to a clock tick early; do not call that "not waiting".
RATE_LIMIT_TOLERANCE_S = 0.01

INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

RESPONSE_PONG = 1
RESPONSE_MESSAGE = 4
RESPONSE_DEFERRED_MESSAGE = 5
RESPONSE_DEFERRED_UPDATE = 6
RESPONSE_UPDATE_MESSAGE = 7
RESPONSE_AUTOCOMPLETE = 8
RESPONSE_MODAL = 9
RESPONSE_TYPES_BY_INTERACTION = {
    INTERACTION_PING: {RESPONSE_PONG},
    INTERACTION_APPLICATION_COMMAND: {RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE, RESPONSE_MODAL},
    INTERACTION_MESSAGE_COMPONENT: {
        RESPONSE_MESSAGE,
        RESPONSE_DEFERRED_MESSAGE,
        RESPONSE_DEFERRED_UPDATE,
        RESPONSE_UPDATE_MESSAGE,
        RESPONSE_MODAL,
    },
    INTERACTION_AUTOCOMPLETE: {RESPONSE_AUTOCOMPLETE},
    INTERACTION_MODAL_SUBMIT: {
        RESPONSE_MESSAGE,
        RESPONSE_DEFERRED_MESSAGE,
        RESPONSE_DEFERRED_UPDATE,
        RESPONSE_UPDATE_MESSAGE,
    },
}
MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_CHAT_INPUT_COMMAND = 20
MESSAGE_TYPE_CONTEXT_MENU_COMMAND = 23
COMMAND_TYPE_CHAT_INPUT = 1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALL_KEY = web.RequestKey("call", RestCall)
UNMATCHED_ROUTE = "?"
CDN_CHUNK_BYTES = 256 * 1024


def webp_without_text(png: bytes) -> bytes:
    """The picture re-encoded as WebP: pixels kept, PNG text chunks dropped."""
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="WEBP", lossless=True)
    return out.getvalue()


def json_response(body: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly "application/json" (no charset).
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def invalid_form_body(kind: Violation, where: str, problems: list[str]) -> RequestRejected:
    return RequestRejected(
        400,
        50035,
        "Invalid Form Body",
        (kind, f"{where}: {'; '.join(problems)}"),
        errors={"_errors": [{"code": "FAKE_DISCORD_RULE", "message": p} for p in problems]},
    )


def route_template_of(path: str) -> str:
    return path.removeprefix(API_PREFIX)


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else route_template_of(resource.canonical)


async def read_body(request: web.Request) -> tuple[Json, list[UploadedFile]]:
    """The JSON body, or ``payload_json`` plus ``files[n]`` parts of a multipart body."""
    body: Json = {}
    uploads: list[UploadedFile] = []
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "payload_json":
                body = json.loads(await part.text())
            elif part.name and part.name.startswith("files[") and part.name.endswith("]"):
                index = int(part.name[len("files[") : -1])
                data = bytes(await part.read(decode=False))
                uploads.append(UploadedFile(index, part.filename or f"file{index}", data))
    elif request.can_read_body:
        body = await request.json()
    call = request[CALL_KEY]
    call.json = body
    call.files = [(u.filename, len(u.data)) for u in uploads]
    return body, uploads


class RestApi:
    def __init__(self, state: DiscordState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway

    def routes(self) -> list[web.RouteDef]:
        api = API_PREFIX
        return [
            web.get(f"{api}/gateway", self.get_gateway),
            web.get(f"{api}/gateway/bot", self.get_gateway_bot),
            web.get(f"{api}/users/@me", self.get_current_user),
            web.post(f"{api}/users/@me/channels", self.create_dm),
            web.delete(f"{api}/users/@me/guilds/{{guild}}", self.leave_guild),
            web.get(f"{api}/users/{{user_id}}", self.get_user),
            web.get(f"{api}/oauth2/applications/@me", self.get_application),
            web.get(f"{api}/applications/{{app}}/commands", self.get_commands),
            web.put(f"{api}/applications/{{app}}/commands", self.put_commands),
            web.get(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self.get_commands),
            web.put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self.put_commands),
            web.get(f"{api}/guilds/{{guild}}", self.get_guild),
            web.get(f"{api}/guilds/{{guild}}/members/{{user_id}}", self.get_member),
            web.get(f"{api}/channels/{{channel}}", self.get_channel),
            web.get(
                f"{api}/channels/{{channel}}/thread-members/{{user_id}}", self.get_thread_member
            ),
            web.post(f"{api}/channels/{{channel}}/typing", self.trigger_typing),
            web.post(f"{api}/channels/{{channel}}/messages", self.create_channel_message),
            web.get(f"{api}/channels/{{channel}}/messages", self.get_channel_messages),
            web.get(f"{api}/channels/{{channel}}/messages/{{message}}", self.get_channel_message),
            web.patch(
                f"{api}/channels/{{channel}}/messages/{{message}}", self.edit_channel_message
            ),
            web.delete(
                f"{api}/channels/{{channel}}/messages/{{message}}", self.delete_channel_message
            ),
            web.post(f"{api}/interactions/{{interaction}}/{{token}}/callback", self.callback),
            web.post(f"{api}/webhooks/{{app}}/{{token}}", self.create_followup),
            web.get(f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.get_webhook_msg),
            web.patch(
                f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.edit_webhook_msg
            ),
            web.delete(
                f"{api}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.delete_webhook_msg
            ),
            web.get("/attachments/{channel}/{attachment}/{filename}", self.download_attachment),
        ]

    def route_keys(self) -> set[tuple[str, str]]:
        """(method, template) of every REST route, templates without the API prefix."""
        return {
            (route.method, route_template_of(route.path))
            for route in self.routes()
            if isinstance(route, web.RouteDef) and route.path.startswith(API_PREFIX)
        }

    # -- cross-cutting: recording, auth, rate limits, Discord-shaped errors ----------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        if not request.path.startswith(API_PREFIX):
            return await self._answer_unknown_routes(request, handler)
        call = RestCall(
            request.method, request.path, route, 0, self.state.now(), dict(request.query)
        )
        request[CALL_KEY] = call
        response: web.StreamResponse | None
        try:
            response = self._rate_limited_response(request.method, route)
            if response is None:
                outage = self._planned_outage(request.method, route)
                if outage is not None and not outage[1]:
                    self._fail(request, outage[0])
                self._check_authorization(request, route)
                response = await self._answer_unknown_routes(request, handler)
                if outage is not None:  # landed: it took effect, and its answer is lost
                    self._fail(request, outage[0])
        except RequestRejected as rejection:
            if rejection.violation is not None:
                self.state.violate(*rejection.violation)
            response = json_response(rejection.body(), rejection.status)
        call.status = response.status
        self.state.calls.append(call)
        self.state.feed.notify()
        return response

    async def _answer_unknown_routes(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            self.state.violate(
                Violation.UNKNOWN_ROUTE, f"{request.method} {request.path} is not a route it knows"
            )
            return json_response({"message": "404: Not Found", "code": 0}, 404)

    def _check_authorization(self, request: web.Request, route: str) -> None:
        if route == UNMATCHED_ROUTE or route.startswith(("/webhooks/", "/interactions/")):
            return  # unknown routes get their own 404; interaction tokens authenticate webhooks
        if request.headers.get("Authorization") != f"Bot {self.state.token}":
            raise RequestRejected(
                401,
                0,
                "401: Unauthorized",
                (Violation.UNAUTHORIZED, f"{request.method} {route} without 'Bot <token>'"),
            )

    def _planned_outage(self, method: str, route: str) -> tuple[int, bool] | None:
        """The status planned for this call (``FakeDiscord.fail``) and whether it lands."""
        plan = self.state.outage_plans.pop((method, route), None)
        if plan is None:
            return None
        remaining, status, landed = plan
        if remaining > 1:
            self.state.outage_plans[(method, route)] = (remaining - 1, status, landed)
        return status, landed

    def _fail(self, request: web.Request, status: int) -> NoReturn:
        if status == CONNECTION_DROPPED and request.transport is not None:
            # What the network does: the client sees the connection close before an answer.
            request.transport.close()
        raise RequestRejected(status, 0, f"{status}: Discord could not answer (injected)")

    def _rate_limited_response(self, method: str, route: str) -> web.Response | None:
        now = time.monotonic()
        pending = [
            r
            for r in self.state.rate_limit_log
            if (r.method, r.route) == (method, route) and r.retried_after is None
        ]
        for record in pending:
            record.retried_after = now - record.answered_at
            if record.retried_after + RATE_LIMIT_TOLERANCE_S < record.retry_after:
                self.state.violate(
                    Violation.RATE_LIMIT_IGNORED,
                    f"{method} {route} retried {record.retried_after:.3f} s after a 429 that said "
                    f"retry_after={record.retry_after} s",
                )
        plan = self.state.rate_limit_plans.get((method, route))
        if plan is None:
            return None
        plan.remaining -= 1
        if plan.remaining <= 0:
            del self.state.rate_limit_plans[(method, route)]
        self.state.rate_limit_log.append(RateLimitRecord(method, route, plan.retry_after, now))
        scope = "global" if plan.is_global else "user"
        headers = {
            "Content-Type": "application/json",
            "Retry-After": str(math.ceil(plan.retry_after)),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + plan.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{plan.retry_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(f"{method} {route}".encode()).hexdigest()[:16],
            "X-RateLimit-Scope": scope,
            # discord.py treats a 429 without Via as a Cloudflare ban and gives up.
            "Via": "1.1 google",
        }
        if plan.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": plan.retry_after,
            "global": plan.is_global,
            "code": 0,
        }
        return web.Response(body=json.dumps(body).encode(), status=429, headers=headers)

    # -- identity and discovery ------------------------------------------------------------

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway.url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return json_response({"url": self.gateway.url, "shards": 1, "session_start_limit": limit})

    async def get_current_user(self, request: web.Request) -> web.Response:
        user = {**self.state.bot_user_json(), "verified": True, "mfa_enabled": False, "flags": 0}
        return json_response(user)

    async def get_user(self, request: web.Request) -> web.Response:
        user_id = int(request.match_info["user_id"])
        if self.state.find_user(user_id) is None:
            raise RequestRejected(404, 10013, "Unknown User")
        return json_response(self.state.user_json(user_id))

    async def create_dm(self, request: web.Request) -> web.Response:
        body, _ = await read_body(request)
        recipient = int(body.get("recipient_id", 0))
        if self.state.find_user(recipient) is None:
            raise RequestRejected(
                400,
                50007,
                "Cannot send messages to this user",
                (Violation.UNKNOWN_RESOURCE, f"DM channel for unknown user {recipient}"),
            )
        return json_response(self.state.open_dm(recipient))

    async def get_application(self, request: web.Request) -> web.Response:
        owner = self.state.user_json(self.state.owner_id)
        return json_response(
            {
                "id": str(self.state.application_id),
                "name": "Easel",
                "description": "",
                "icon": None,
                "bot_public": self.state.bot_public,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "team": None,
                "flags": 0,
                "interactions_endpoint_url": None,
            }
        )

    # -- application commands --------------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["app"] != str(self.state.application_id):
            raise RequestRejected(
                404,
                10002,
                "Unknown Application",
                (
                    Violation.UNKNOWN_RESOURCE,
                    f"commands for application {request.match_info['app']}",
                ),
            )
        guild = request.match_info.get("guild")
        if guild is not None and int(guild) not in self.state.guilds:
            raise RequestRejected(
                403,
                50001,
                "Missing Access",
                (
                    Violation.UNKNOWN_RESOURCE,
                    f"commands for guild {guild}, which the bot is not in",
                ),
            )
        return None if guild is None else int(guild)

    async def get_commands(self, request: web.Request) -> web.Response:
        return json_response(self.state.registered_commands(self._command_scope(request)))

    async def put_commands(self, request: web.Request) -> web.Response:
        guild_id = self._command_scope(request)
        commands = await request.json()
        request[CALL_KEY].json = commands
        problems = command_list_problems(commands)
        if problems:
            raise invalid_form_body(Violation.INVALID_COMMANDS, "command sync", problems)
        stored = [self.state.command_json(command, guild_id) for command in commands]
        if guild_id is None:
            self.state.global_commands = stored
        else:
            self.state.guild_commands[guild_id] = stored
        return json_response(stored)

    # -- guild and channels ----------------------------------------------------------------

    def _check_guild(self, request: web.Request) -> int:
        guild_id = int(request.match_info["guild"])
        if guild_id not in self.state.guilds:
            raise RequestRejected(404, 10004, "Unknown Guild")
        return guild_id

    async def leave_guild(self, request: web.Request) -> web.Response:
        guild_id = self._check_guild(request)
        if self.state.bot_user_id not in self.state.guild(guild_id).members:
            raise RequestRejected(404, 10004, "Unknown Guild")
        await self.bot_removed(guild_id)
        return web.Response(status=204)

    async def bot_removed(self, guild_id: int) -> None:
        """The bot is no longer a member of ``guild_id`` (it left, or was removed): GUILD_DELETE
        without ``unavailable`` (none before a bot ever identified: it learns at its READY);
        a later READY no longer lists the guild."""
        self.state.remove_member(self.state.bot_user_id, guild_id)
        if self.gateway.session is not None:
            await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild_id)})

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self.state.guild_json(with_members=False, guild_id=self._check_guild(request))
        return json_response({k: v for k, v in guild.items() if k not in ("members", "channels")})

    async def get_member(self, request: web.Request) -> web.Response:
        members = self.state.guild(self._check_guild(request)).members
        member = members.get(int(request.match_info["user_id"]))
        if member is None:
            raise RequestRejected(404, 10007, "Unknown Member")
        return json_response(member_payload(member))

    async def get_channel(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        channel = self.state.channel(channel_id)
        self._check_bot_sees(channel_id)
        return json_response(channel)

    async def get_thread_member(self, request: web.Request) -> web.Response:
        thread_id = int(request.match_info["channel"])
        self._check_bot_sees(thread_id)
        user_id = int(request.match_info["user_id"])
        return json_response(self.state.thread_member(thread_id, user_id))

    async def trigger_typing(self, request: web.Request) -> web.Response:
        self._check_bot_may_send(int(request.match_info["channel"]))
        return web.Response(status=204)

    def _check_bot_sees(self, channel_id: int) -> int:
        """The bot's permissions in the channel; 403 Missing Access where it cannot view it."""
        permissions = self.state.permissions_in(channel_id, self.state.bot_user_id)
        if not permissions & PERMISSION_VIEW_CHANNEL:
            raise RequestRejected(403, 50001, "Missing Access")
        return permissions

    def _check_bot_may_send(self, channel_id: int) -> None:
        channel = self.state.channel(channel_id)
        permissions = self._check_bot_sees(channel_id)
        if channel_id in self.state.channels_without_send or not (
            permissions & PERMISSION_SEND_MESSAGES
        ):
            raise RequestRejected(403, 50013, "Missing Permissions")
        # Only those who may manage threads can unarchive a locked one (a post would).
        metadata = channel.get("thread_metadata") or {}
        locked = metadata.get("archived") and metadata.get("locked")
        if locked and not permissions & PERMISSION_MANAGE_THREADS:
            raise RequestRejected(400, 50083, "Thread is archived")

    async def create_channel_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        self._check_bot_may_send(channel_id)
        body, uploads = await read_body(request)
        self._validate_message(
            body,
            uploads,
            self.state.upload_limit_in(channel_id),
            f"channel {channel_id}",
            creating=True,
        )
        await self._unarchived_by_post(channel_id)
        message = self.state.new_message(channel_id, self.state.bot_user_json())
        if body.get("message_reference"):
            message.payload["message_reference"] = body["message_reference"]
        self.state.apply_message_body(message, body, uploads, editing=False)
        await self.announce("MESSAGE_CREATE", message)
        return json_response(message.payload)

    async def _unarchived_by_post(self, channel_id: int) -> None:
        """A post Discord accepts in an archived thread unarchives it (THREAD_UPDATE)."""
        metadata = self.state.channel(channel_id).get("thread_metadata")
        if metadata is not None and metadata["archived"]:
            metadata["archived"] = False
            await self.gateway.dispatch("THREAD_UPDATE", self.state.channel(channel_id))

    def _check_editable_in(self, channel_id: int) -> None:
        """Discord refuses any edit of a message in an archived thread, locked or not."""
        channel = self.state.channels.get(channel_id) or {}  # gone: its message is answered
        if (channel.get("thread_metadata") or {}).get("archived"):
            raise RequestRejected(400, 50083, "Thread is archived")

    async def get_channel_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        self.state.channel(channel_id)
        # Discord answers Missing Access before it says whether the message exists.
        if self._check_bot_sees(channel_id) & PERMISSION_READ_MESSAGE_HISTORY == 0:
            raise RequestRejected(403, 50001, "Missing Access")
        return json_response(self._channel_message(request).payload)

    async def get_channel_messages(self, request: web.Request) -> web.Response:
        """A page of the channel's history, newest first, as Discord answers: the ``limit``
        (1-100, default 50) messages right after ``after``, else right before ``before``
        (default: the latest). A bot that sees the channel but may not read its history gets
        no messages, not a refusal (discord/discord-api-docs#455); one that does not see it is
        refused (``_check_bot_sees``)."""
        channel_id = int(request.match_info["channel"])
        self.state.channel(channel_id)
        if self._check_bot_sees(channel_id) & PERMISSION_READ_MESSAGE_HISTORY == 0:
            return json_response([])
        limit = int(request.query.get("limit", 50))
        if not 1 <= limit <= 100:
            raise RequestRejected(400, 50035, f"Invalid Form Body: limit {limit} is not 1-100")
        after, before = request.query.get("after"), request.query.get("before")
        in_channel = sorted(
            (
                m
                for m in self.state.messages.values()
                if m.channel_id == channel_id and not m.deleted
            ),
            key=lambda message: message.id,
        )
        if after is not None:
            page = [m for m in in_channel if m.id > int(after)][:limit]
        else:
            page = [m for m in in_channel if before is None or m.id < int(before)][-limit:]
        return json_response([message.payload for message in reversed(page)])

    async def edit_channel_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message.is_ephemeral:  # in no channel: edited through its interaction's token alone
            raise RequestRejected(
                404,
                10008,
                "Unknown Message",
                (
                    Violation.UNKNOWN_RESOURCE,
                    f"edit of ephemeral message {message.id} in a channel",
                ),
            )
        if message.author_id != self.state.bot_user_id:
            raise RequestRejected(
                403,
                50005,
                "Cannot edit a message authored by another user",
                (Violation.UNKNOWN_RESOURCE, f"edit of message {message.id} by another author"),
            )
        self._check_editable_in(message.channel_id)
        body, uploads = await read_body(request)
        limit = self.state.upload_limit_in(message.channel_id)
        self._validate_message(body, uploads, limit, f"edit of message {message.id}")
        self.state.apply_message_body(message, body, uploads, editing=True)
        await self.announce("MESSAGE_UPDATE", message)
        return json_response(message.payload)

    async def delete_channel_message(self, request: web.Request) -> web.Response:
        await self.delete_message(self._channel_message(request))
        return web.Response(status=204)

    def _channel_message(self, request: web.Request) -> StoredMessage:
        channel_id = int(request.match_info["channel"])
        self.state.channel(channel_id)
        self._check_bot_sees(channel_id)
        return self.state.message_in_channel(channel_id, int(request.match_info["message"]))

    async def download_attachment(self, request: web.Request) -> web.StreamResponse:
        attachment = self.state.attachments.get(int(request.match_info["attachment"]))
        if attachment is None:
            raise web.HTTPNotFound()
        if self.state.cdn_reencodes_pictures and attachment.content_type == "image/png":
            return web.Response(body=webp_without_text(attachment.data), content_type="image/webp")
        # Sent in pieces and counted, so a test sees how much a reader took before hanging up.
        response = web.StreamResponse()
        response.content_type = attachment.content_type
        response.content_length = attachment.size
        served = self.state.cdn_bytes_served
        served[attachment.attachment_id] = 0
        try:
            await response.prepare(request)
            for start in range(0, attachment.size, CDN_CHUNK_BYTES):
                await response.write(attachment.data[start : start + CDN_CHUNK_BYTES])
                served[attachment.attachment_id] = min(start + CDN_CHUNK_BYTES, attachment.size)
        except (ConnectionError, RuntimeError):  # the reader hung up
            pass
        return response

    # -- interaction responses -------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        handle = self.state.interaction(
            int(request.match_info["interaction"]), request.match_info["token"]
        )
        body, uploads = await read_body(request)
        try:
            response_body = await self._respond(handle, body, uploads)
        except RequestRejected as rejection:
            handle.error_codes.append(rejection.code)
            raise
        if request.query.get("with_response", "").lower() in ("1", "true"):
            return json_response(response_body)
        return web.Response(status=204)

    async def _respond(
        self, handle: InteractionHandle, body: Json, uploads: list[UploadedFile]
    ) -> Json:
        now = self.state.now()
        response_type = body.get("type")
        if handle.response_type is not None:
            raise RequestRejected(
                400,
                40060,
                "Interaction has already been acknowledged.",
                (
                    Violation.DOUBLE_ACK,
                    f"{handle.label}: second initial response (type {response_type}) after "
                    f"type {handle.response_type}",
                ),
            )
        age = now - handle.created_at
        if handle.ack_failed or age > ACK_DEADLINE_S:
            handle.ack_failed = True
            raise RequestRejected(
                404,
                10062,
                "Unknown interaction",
                (
                    Violation.LATE_ACK,
                    f"{handle.label}: first response came {age:.2f} s after the interaction; "
                    f"Discord allows {ACK_DEADLINE_S:.0f} s",
                ),
            )
        allowed = RESPONSE_TYPES_BY_INTERACTION.get(handle.type, set())
        if response_type not in allowed:
            raise invalid_form_body(
                Violation.WRONG_RESPONSE_TYPE,
                handle.label,
                [f"response type {response_type} is not valid here; accepted: {sorted(allowed)}"],
            )
        data: Json = body.get("data") or {}
        self._validate_response_data(handle, response_type, data, uploads)
        handle.response_type = response_type
        handle.acknowledged_at = now
        message = await self._apply_response(handle, response_type, data, uploads)
        interaction_info: Json = {"id": str(handle.id), "type": handle.type}
        resource: Json = {"type": response_type}
        if message is not None:
            interaction_info["response_message_id"] = str(message.id)
            interaction_info["response_message_loading"] = message.is_loading
            interaction_info["response_message_ephemeral"] = message.is_ephemeral
            if response_type != RESPONSE_DEFERRED_UPDATE:
                resource["message"] = message.payload
        self.state.feed.notify()
        return {"interaction": interaction_info, "resource": resource}

    def _validate_response_data(
        self, handle: InteractionHandle, response_type: int, data: Json, uploads: list[UploadedFile]
    ) -> None:
        if response_type in (RESPONSE_MESSAGE, RESPONSE_UPDATE_MESSAGE):
            self._validate_message(
                data,
                uploads,
                handle.attachment_size_limit,
                handle.label,
                creating=response_type == RESPONSE_MESSAGE,
            )
        elif response_type == RESPONSE_AUTOCOMPLETE:
            problems = autocomplete_problems(data)
            if problems:
                raise invalid_form_body(Violation.INVALID_AUTOCOMPLETE, handle.label, problems)
        elif response_type == RESPONSE_MODAL:
            problems = modal_problems(data)
            if problems:
                raise invalid_form_body(Violation.INVALID_MODAL, handle.label, problems)

    async def _apply_response(
        self, handle: InteractionHandle, response_type: int, data: Json, uploads: list[UploadedFile]
    ) -> StoredMessage | None:
        if response_type in (RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE):
            message = self._new_interaction_message(handle)
            if response_type == RESPONSE_MESSAGE:
                self.state.apply_message_body(message, data, uploads, editing=False)
            else:
                ephemeral = int(data.get("flags") or 0) & FLAG_EPHEMERAL
                message.payload["flags"] = FLAG_LOADING | ephemeral
            handle.original_message_id = message.id
            await self.announce("MESSAGE_CREATE", message)
            return message
        if response_type in (RESPONSE_DEFERRED_UPDATE, RESPONSE_UPDATE_MESSAGE):
            source = self._source_message(handle)
            handle.original_message_id = source.id
            if response_type == RESPONSE_UPDATE_MESSAGE:
                self.state.apply_message_body(source, data, uploads, editing=True)
                await self.announce("MESSAGE_UPDATE", source)
            return source
        if response_type == RESPONSE_AUTOCOMPLETE:
            handle.autocomplete_choices = list(data.get("choices") or [])
        elif response_type == RESPONSE_MODAL:
            handle.modal = data
        return None

    def _source_message(self, handle: InteractionHandle) -> StoredMessage:
        if handle.source_message_id is None or handle.source_message_id not in self.state.messages:
            raise invalid_form_body(
                Violation.WRONG_RESPONSE_TYPE,
                handle.label,
                ["an update response needs an interaction that came from a message"],
            )
        return self.state.messages[handle.source_message_id]

    def _new_interaction_message(self, handle: InteractionHandle) -> StoredMessage:
        message_type = MESSAGE_TYPE_DEFAULT
        if handle.type == INTERACTION_APPLICATION_COMMAND:
            command_type = handle.payload["data"].get("type", COMMAND_TYPE_CHAT_INPUT)
            message_type = (
                MESSAGE_TYPE_CHAT_INPUT_COMMAND
                if command_type == COMMAND_TYPE_CHAT_INPUT
                else MESSAGE_TYPE_CONTEXT_MENU_COMMAND
            )
        message = self.state.new_message(
            handle.channel_id, self.state.bot_user_json(), message_type=message_type
        )
        user = handle.payload.get("member", {}).get("user") or handle.payload.get("user")
        message.payload.update(
            {
                "webhook_id": str(self.state.application_id),
                "application_id": str(self.state.application_id),
                "interaction_metadata": {
                    "id": str(handle.id),
                    "type": handle.type,
                    "user": user,
                    "authorizing_integration_owners": handle.payload[
                        "authorizing_integration_owners"
                    ],
                },
            }
        )
        return message

    # -- webhooks: the interaction token's follow-ups and original-response edits ----------

    def _interaction_for_webhook(self, request: web.Request) -> InteractionHandle:
        handle = self.state.interaction_by_token(request.match_info["token"])
        if request.match_info["app"] != str(self.state.application_id) or handle is None:
            raise RequestRejected(
                404,
                10015,
                "Unknown Webhook",
                (Violation.UNKNOWN_RESOURCE, f"{request.method} {request.path}: unknown webhook"),
            )
        age = self.state.now() - handle.created_at
        if age > TOKEN_LIFETIME_S:
            handle.error_codes.append(50027)
            raise RequestRejected(
                401,
                50027,
                "Invalid Webhook Token",
                (
                    Violation.EXPIRED_TOKEN,
                    f"{handle.label}: token used {age:.0f} s after the interaction; "
                    f"tokens live {TOKEN_LIFETIME_S} s",
                ),
            )
        if handle.response_type is None:
            handle.error_codes.append(10015)
            raise RequestRejected(
                404,
                10015,
                "Unknown Webhook",
                (
                    Violation.NOT_ACKNOWLEDGED,
                    f"{handle.label}: {request.method} {route_template(request)} before any "
                    "accepted initial response",
                ),
            )
        return handle

    def _webhook_message(self, handle: InteractionHandle, message_ref: str) -> StoredMessage:
        if message_ref == "@original":
            message_id = handle.original_message_id
        else:
            own = {handle.original_message_id, *handle.followup_ids}
            message_id = int(message_ref) if int(message_ref) in own else None
        message = None if message_id is None else self.state.messages.get(message_id)
        if message is None or message.deleted:
            raise RequestRejected(
                404,
                10008,
                "Unknown Message",
                (Violation.UNKNOWN_RESOURCE, f"{handle.label}: no message {message_ref}"),
            )
        return message

    async def get_webhook_msg(self, request: web.Request) -> web.Response:
        handle = self._interaction_for_webhook(request)
        return json_response(self._webhook_message(handle, request.match_info["message"]).payload)

    async def edit_webhook_msg(self, request: web.Request) -> web.Response:
        handle = self._interaction_for_webhook(request)
        message = self._webhook_message(handle, request.match_info["message"])
        self._check_editable_in(message.channel_id)
        body, uploads = await read_body(request)
        self._validate_message(body, uploads, handle.attachment_size_limit, handle.label)
        self.state.apply_message_body(message, body, uploads, editing=True)
        await self.announce("MESSAGE_UPDATE", message)
        return json_response(message.payload)

    async def delete_webhook_msg(self, request: web.Request) -> web.Response:
        handle = self._interaction_for_webhook(request)
        await self.delete_message(self._webhook_message(handle, request.match_info["message"]))
        return web.Response(status=204)

    async def create_followup(self, request: web.Request) -> web.Response:
        handle = self._interaction_for_webhook(request)
        body, uploads = await read_body(request)
        self._validate_message(
            body, uploads, handle.attachment_size_limit, handle.label, creating=True
        )
        original = handle.original
        if original is not None and original.is_loading and not original.deleted:
            # Discord turns the first follow-up after a deferred reply into that reply (in
            # its visibility); once that reply is deleted, a follow-up is a message of its own.
            self.state.apply_message_body(original, body, uploads, editing=True)
            message = original
            await self.announce("MESSAGE_UPDATE", message)
        else:
            message = self._new_interaction_message(handle)
            self.state.apply_message_body(message, body, uploads, editing=False)
            handle.followup_ids.append(message.id)
            await self.announce("MESSAGE_CREATE", message)
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(message.payload)
        return web.Response(status=204)

    # -- shared message plumbing -----------------------------------------------------------

    def _validate_message(
        self,
        body: Json,
        uploads: list[UploadedFile],
        size_limit: int,
        where: str,
        *,
        creating: bool = False,
    ) -> None:
        problems = message_problems(body)
        if problems:
            raise invalid_form_body(Violation.INVALID_MESSAGE, where, problems)
        if creating and (empty := empty_message_problem(body, len(uploads))) is not None:
            raise RequestRejected(
                400,
                50006,
                "Cannot send an empty message",
                (Violation.INVALID_MESSAGE, f"{where}: {empty}"),
            )
        self.state.check_upload_sizes(uploads, size_limit, where)

    async def delete_message(self, message: StoredMessage) -> None:
        message.deleted = True
        self.state.feed.notify()
        if self.gateway_sees(message):
            await self.gateway.dispatch(
                "MESSAGE_DELETE",
                {
                    "id": str(message.id),
                    "channel_id": str(message.channel_id),
                    **self._guild_key(message),
                },
            )

    async def announce(self, event: str, message: StoredMessage) -> None:
        if self.gateway_sees(message):
            await self.gateway.dispatch(event, message.payload)

    def gateway_sees(self, message: StoredMessage) -> bool:
        if message.is_ephemeral or self.gateway.session is None:
            return False
        bot_permissions = self.state.permissions_in(message.channel_id, self.state.bot_user_id)
        if not bot_permissions & PERMISSION_VIEW_CHANNEL:
            return False
        is_dm = self.state.channel(message.channel_id)["type"] == CHANNEL_TYPE_DM
        needed = INTENT_DIRECT_MESSAGES if is_dm else INTENT_GUILD_MESSAGES
        return bool(self.gateway.intents & needed)

    def _guild_key(self, message: StoredMessage) -> Json:
        guild_id = message.payload.get("guild_id")
        return {} if guild_id is None else {"guild_id": guild_id}
