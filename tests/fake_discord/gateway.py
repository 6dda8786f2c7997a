"""Gateway v10 over a websocket, JSON encoding, optionally zlib-stream compressed.

One bot session at a time: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME replaying
the events the client missed, and test hooks to drop the connection or ask for a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from .payloads import INTENT_GUILD_MEMBERS, Json, member_payload
from .rules import Violation
from .state import DiscordState

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

CLOSE_UNKNOWN_OPCODE = 4001
CLOSE_NOT_AUTHENTICATED = 4003
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_RECONNECT_AND_RESUME = 4000


class GatewayConnection:
    """One websocket; sends are serialised so compressed frames stay in stream order."""

    def __init__(self, socket: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.socket = socket
        self._compressor = zlib.compressobj() if zlib_stream else None
        self._send_lock = asyncio.Lock()

    async def send(self, frame: Json) -> None:
        text = json.dumps(frame)
        async with self._send_lock:
            if self._compressor is None:
                await self.socket.send_str(text)
            else:
                data = self._compressor.compress(text.encode()) + self._compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                await self.socket.send_bytes(data)


@dataclass
class GatewaySession:
    session_id: str
    intents: int
    shard: list[int] | None
    sequence: int = 0
    sent_frames: list[Json] = field(default_factory=list)


class Gateway:
    def __init__(self, state: DiscordState, *, heartbeat_interval_ms: int) -> None:
        self.state = state
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.url = ""  # "ws://127.0.0.1:PORT/gateway", known once the server listens
        self.session: GatewaySession | None = None
        self.connection: GatewayConnection | None = None
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.compressions: list[str] = []  # the compress= each connection asked for
        self.pending: list[tuple[str, Json]] = []  # see dispatch_later

    @property
    def intents(self) -> int:
        return 0 if self.session is None else self.session.intents

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=0)
        await socket.prepare(request)
        compression = request.query.get("compress", "")
        # zstd-stream is answered with plain text frames, which discord.py also accepts.
        connection = GatewayConnection(socket, zlib_stream=compression == "zlib-stream")
        self.compressions.append(compression)
        await connection.send(
            {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
        )
        authenticated = False
        try:
            async for message in socket:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                authenticated = await self._on_frame(connection, frame, authenticated)
        finally:
            if self.connection is connection:
                self.connection = None
            self.state.feed.notify()
        return socket

    async def _on_frame(
        self, connection: GatewayConnection, frame: Json, authenticated: bool
    ) -> bool:
        op = frame.get("op")
        raw_data = frame.get("d")
        data: Json = raw_data if isinstance(raw_data, dict) else {}
        if op == OP_HEARTBEAT:
            self.heartbeat_count += 1
            await connection.send({"op": OP_HEARTBEAT_ACK})
            return authenticated
        if op == OP_IDENTIFY:
            return await self._identify(connection, data)
        if op == OP_RESUME:
            return await self._resume(connection, data)
        if not authenticated:
            self.state.violate(Violation.GATEWAY, f"op {op} sent before IDENTIFY or RESUME")
            await connection.socket.close(
                code=CLOSE_NOT_AUTHENTICATED, message=b"Not authenticated"
            )
            return False
        if op == OP_REQUEST_GUILD_MEMBERS:
            await self._send_member_chunk(data)
        elif op not in (OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE):
            self.state.violate(Violation.GATEWAY, f"unknown gateway opcode {op}")
            await connection.socket.close(code=CLOSE_UNKNOWN_OPCODE, message=b"Unknown opcode")
        return True

    async def _identify(self, connection: GatewayConnection, data: Json) -> bool:
        if data.get("token") != self.state.token:
            self.state.violate(
                Violation.UNAUTHORIZED, "IDENTIFY with a token the fake did not issue"
            )
            await connection.socket.close(
                code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed"
            )
            return False
        self.identify_count += 1
        self.session = GatewaySession(
            session_id=uuid.uuid4().hex,
            intents=int(data.get("intents", 0)),
            shard=data.get("shard"),
        )
        self.connection = connection
        ready: Json = {
            "v": 10,
            "user": {**self.state.bot_user_json(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.state.bot_guilds()],
            "session_id": self.session.session_id,
            "resume_gateway_url": self.url,
            "application": {"id": str(self.state.application_id), "flags": 0},
        }
        if self.session.shard is not None:
            ready["shard"] = self.session.shard
        self.pending.clear()  # the GUILD_CREATEs below carry the world as it is now
        await self.dispatch("READY", ready)
        with_members = bool(self.session.intents & INTENT_GUILD_MEMBERS)
        for guild_id in self.state.bot_guilds():
            guild = self.state.guild_json(with_members=with_members, guild_id=guild_id)
            await self.dispatch("GUILD_CREATE", guild)
        return True

    async def _resume(self, connection: GatewayConnection, data: Json) -> bool:
        session = self.session
        if (
            session is None
            or data.get("session_id") != session.session_id
            or data.get("token") != self.state.token
        ):
            await connection.send({"op": OP_INVALID_SESSION, "d": False})
            return False
        self.connection = connection
        self.resume_count += 1
        last_seen = int(data.get("seq") or 0)
        for frame in session.sent_frames:
            if frame["s"] > last_seen:
                await connection.send(frame)
        await self.dispatch("RESUMED", {})
        return True

    async def _send_member_chunk(self, data: Json) -> None:
        guild = self.state.guild(int(data.get("guild_id") or self.state.guild_id))
        members = [member_payload(m) for m in guild.members.values()]
        chunk: Json = {
            "guild_id": str(guild.guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    def dispatch_later(self, event: str, data: Json) -> None:
        """Queues an event that a synchronous change to the world causes (CHANNEL_CREATE, ...);
        it goes out before the next dispatched event. Before any IDENTIFY there is nobody to
        tell: the GUILD_CREATEs will carry the change."""
        if self.session is not None:
            self.pending.append((event, data))

    async def dispatch(self, event: str, data: Json) -> None:
        """Sends an event now, or keeps it for the RESUME when the client is disconnected."""
        while self.pending:
            await self._send_event(*self.pending.pop(0))
        await self._send_event(event, data)

    async def _send_event(self, event: str, data: Json) -> None:
        session = self.session
        if session is None:
            raise RuntimeError(
                f"cannot dispatch {event}: no bot has identified on the gateway yet "
                "(start the bot and await fake.wait_until_identified() first)"
            )
        session.sequence += 1
        frame: Json = {"op": OP_DISPATCH, "t": event, "s": session.sequence, "d": data}
        session.sent_frames.append(frame)
        connection = self.connection
        if connection is not None and not connection.socket.closed:
            try:
                await connection.send(frame)
            except ConnectionError:
                self.connection = None  # replayed on RESUME
        self.state.feed.notify()

    async def drop_connection(self, code: int = CLOSE_RECONNECT_AND_RESUME) -> None:
        """Closes the websocket as a Discord outage would; the client is expected to RESUME."""
        connection = self.connection
        if connection is None:
            raise RuntimeError("no gateway connection to drop")
        self.connection = None
        await connection.socket.close(code=code, message=b"fake Discord dropped the connection")

    async def request_reconnect(self) -> None:
        """Sends op 7 RECONNECT, which discord.py answers by reconnecting with RESUME."""
        if self.connection is None:
            raise RuntimeError("no gateway connection to ask for a reconnect")
        await self.connection.send({"op": OP_RECONNECT, "d": None})

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.socket.close(code=1001, message=b"fake Discord stopping")
            self.connection = None
