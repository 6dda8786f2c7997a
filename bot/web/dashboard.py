"""The admin dashboard: one server's live queue, the workers, its latest pictures, each
member's quota use today and what members were refused, for that server's admins (aiohttp;
no discord, no torch).

``/easel-admin dashboard`` gives an admin a sign-in link: signed for the dashboard, bound to
them and the server, 15 minutes, single use. Opening it (once Discord confirms they still
manage the server) sets a signed session cookie for that one server (HttpOnly,
SameSite=Strict, 8 hours, path ``/dashboard/<server>``), and every data route checks that the
cookie names the server of its URL. Private results never appear (the queries leave them out,
prompts included). Refusals carry no prompt (``bot.refusals``).

What members posted in a channel is shown only to an admin who may read that channel, by
Discord's rules (Manage Server is not View Channel, nor a place in a private thread): the
gallery and its picture route, queued jobs' prompts and what refused members were told. Who
did what, when and how much (members, kinds, reasons, channel ids, quota) is the server's
bookkeeping and shows whole.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
from aiohttp import web
from PIL import Image

from bot.jobs.queue import JobQueue
from bot.policy.quota import Period, period_start
from bot.web.links import LINK_LIFETIME_S, LinkRefused, LinkSigner
from bot.web.pages import dashboard_page
from bot.web.server import SECURITY_HEADERS, html_page, plain_text, refused_page
from db import dashboard as queries
from db import refusals

SESSION_LIFETIME_S = 8 * 60 * 60
COOKIE = "easel_dashboard"
GALLERY_SIZE = 24
REFUSALS_SHOWN = 20
THUMBNAIL_PX = 256
# How long an admin's reading rights, once asked of Discord, hold: the page polls every 3 s.
READING_RIGHTS_S = 15
_LOGIN, _SESSION = "dashboard-login", "dashboard-session"
_AGAIN = "run /easel-admin dashboard again"
_SIGNED_OUT = "You are not signed in to this server's dashboard; run /easel-admin dashboard there."


@dataclass(frozen=True)
class DashboardLogin:
    """What a sign-in link allows: member ``user_id`` opens ``guild_id``'s dashboard once."""

    user_id: int
    guild_id: int
    expires_at: int
    nonce: str


@dataclass(frozen=True)
class DashboardSession:
    user_id: int
    guild_id: int
    expires_at: int


class ServerAdmins(Protocol):
    """Discord's answers the dashboard needs (``cogs.admin`` implements it)."""

    async def refusal(self, guild_id: int, user_id: int) -> str | None:
        """Why the member may not see the server's dashboard now, or None: they manage it."""
        ...

    def name_of(self, guild_id: int) -> str: ...

    async def readable_channels(
        self, guild_id: int, user_id: int, channel_ids: Collection[int]
    ) -> set[int]:
        """Which of ``channel_ids`` the member may read now (any other: none of them)."""
        ...


class Dashboard:
    """Makes sign-in links and serves ``/dashboard/...`` on the bot's web server."""

    def __init__(
        self,
        signer: LinkSigner,
        public_url: str,
        conn: aiosqlite.Connection,
        queue: JobQueue,
        admins: ServerAdmins,
    ) -> None:
        self._signer = signer
        self._public_url = public_url.rstrip("/")
        self._secure_cookie = self._public_url.startswith("https://")
        self._conn = conn
        self._queue = queue
        self._admins = admins
        # Per admin and server: when their rights were first asked, and each channel's answer.
        self._reading: dict[tuple[int, int], tuple[float, dict[int, bool]]] = {}

    def link_for(self, user_id: int, guild_id: int) -> str:
        login = DashboardLogin(
            user_id, guild_id, int(self._signer.clock()) + LINK_LIFETIME_S, secrets.token_hex(16)
        )
        return f"{self._public_url}/dashboard/login/{self._signer.seal(_LOGIN, asdict(login))}"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/dashboard/login/{token}", self._login),
            web.get("/dashboard/{guild:[0-9]+}", self._home),
            web.get("/dashboard/{guild:[0-9]+}/state", self._state),
            web.get(
                "/dashboard/{guild:[0-9]+}/picture/{job:[0-9a-f]{16}}/{idx:[0-9]}", self._picture
            ),
        ]

    # Signing in.

    async def _login(self, request: web.Request) -> web.Response:
        try:
            login = DashboardLogin(**self._signer.unseal(_LOGIN, request.match_info["token"]))
            self._signer.refuse_spent(login, _AGAIN)
            refusal = await self._admins.refusal(login.guild_id, login.user_id)
            if refusal is not None:
                raise LinkRefused(refusal)
            self._signer.use(login, _AGAIN)
        except LinkRefused as refused:
            return refused_page(refused)
        session = DashboardSession(
            login.user_id, login.guild_id, int(self._signer.clock()) + SESSION_LIFETIME_S
        )
        # The page itself, not a redirect: a redirect at the end of a navigation that started
        # on Discord's site is cross-site, so the browser would not send the Strict cookie.
        response = self._page(login.guild_id)
        response.set_cookie(
            COOKIE,
            self._signer.seal(_SESSION, asdict(session)),
            max_age=SESSION_LIFETIME_S,
            path=_home(login.guild_id),
            httponly=True,
            samesite="Strict",
            secure=self._secure_cookie,
        )
        return response

    def _session(self, request: web.Request) -> DashboardSession:
        """The request's session for the server in its URL; LinkRefused otherwise."""
        token = request.cookies.get(COOKIE)
        if token is None:
            raise LinkRefused(_SIGNED_OUT)
        session = DashboardSession(**self._signer.unseal(_SESSION, token))
        if session.guild_id != int(request.match_info["guild"]):
            raise LinkRefused(_SIGNED_OUT)
        if self._signer.clock() >= session.expires_at:
            raise LinkRefused("Your dashboard session has ended (8 hours); " + _AGAIN + ".")
        return session

    # The page and its data.

    def _page(self, guild_id: int) -> web.Response:
        home = _home(guild_id)
        return html_page(dashboard_page(home, f"{home}/state"))

    async def _home(self, request: web.Request) -> web.Response:
        # The frame holds no data; its script asks for the state with the session cookie.
        return self._page(int(request.match_info["guild"]))

    async def _state(self, request: web.Request) -> web.Response:
        try:
            session = self._session(request)
        except LinkRefused as refused:
            return plain_text(str(refused), 403)
        state = await self.state(session)
        return web.json_response(state, headers=SECURITY_HEADERS)

    async def _readable(self, session: DashboardSession, channel_ids: set[int]) -> set[int]:
        """Which of ``channel_ids`` the session's admin may read: asked of Discord at most
        once per channel every READING_RIGHTS_S, whatever the number of polls."""
        key = (session.guild_id, session.user_id)
        now = self._signer.clock()
        asked_at, known = self._reading.get(key, (now, {}))
        if now - asked_at >= READING_RIGHTS_S:
            asked_at, known = now, {}
        unknown = channel_ids - known.keys()
        if unknown:
            readable = await self._admins.readable_channels(
                session.guild_id, session.user_id, unknown
            )
            known.update((channel_id, channel_id in readable) for channel_id in unknown)
            self._reading = {
                other: held
                for other, held in self._reading.items()
                if now - held[0] < READING_RIGHTS_S
            }
            self._reading[key] = (asked_at, known)
        return {channel_id for channel_id in channel_ids if known[channel_id]}

    async def state(self, session: DashboardSession) -> dict[str, Any]:
        """What the page shows, for one server only and as far as its admin may read."""
        guild_id = session.guild_id
        snapshot = self._queue.snapshot()
        devices = {running.job.job_id: running.device for running in snapshot.running}
        positions = {job.job_id: place for place, job in enumerate(snapshot.queued)}
        now = time.time()
        unfinished = await queries.unfinished_jobs(self._conn, guild_id)
        candidates = await queries.picture_channels(self._conn, guild_id)
        refused = await refusals.latest(self._conn, guild_id, REFUSALS_SHOWN)
        candidates.update(job.channel_id for job in unfinished if job.channel_id is not None)
        candidates.update(r.channel_id for r in refused if r.channel_id is not None)
        readable = await self._readable(session, candidates)
        pictures = await queries.recent_pictures(self._conn, guild_id, readable, GALLERY_SIZE)
        today = period_start(Period.DAY, now)
        usage = await queries.usage_by_member(self._conn, guild_id, today)
        refused_today = await refusals.counts_by_reason(self._conn, guild_id, today)
        ours = {job.job_id for job in unfinished}
        return {
            "server": self._admins.name_of(guild_id),
            "waiting_in_all": self._queue.queued_count(),
            "queue": [
                {
                    "job": job.job_id,
                    "member": str(job.user_id),  # snowflakes exceed JavaScript's integers
                    "kind": job.kind,
                    "status": job.status,
                    "device": devices.get(job.job_id),
                    "position": positions[job.job_id] + 1 if job.job_id in positions else None,
                    "waited_s": max(0.0, now - job.created_at),
                    "readable": job.channel_id in readable,
                    "prompt": job.prompt if job.channel_id in readable else None,
                }
                for job in unfinished
            ],
            "workers": [
                {
                    "device": slot.device,
                    "busy": slot.device in devices.values(),
                    "jobs": [
                        job_id
                        for job_id, device in devices.items()
                        if device == slot.device and job_id in ours
                    ],
                }
                for slot in self._queue.slots
            ],
            "gallery": [
                {
                    "job": picture.job_id,
                    "idx": picture.idx,
                    "member": str(picture.user_id),
                    "kind": picture.kind,
                    "prompt": picture.prompt,
                    "finished_at": picture.finished_at,
                    "spoiler": picture.spoiler,
                    "url": f"{_home(guild_id)}/picture/{picture.job_id}/{picture.idx}",
                }
                for picture in pictures
            ],
            "quota_today": [
                {
                    "member": str(used.user_id),
                    "images": used.images,
                    "gpu_seconds": used.gpu_seconds,
                }
                for used in usage
            ],
            "refusals": [
                {
                    "member": str(refusal.user_id),
                    "channel": None if refusal.channel_id is None else str(refusal.channel_id),
                    "reason": refusal.reason,
                    "readable": refusal.channel_id in readable,
                    # None: the member keeps results private, or the admin cannot read there.
                    "sentence": refusal.sentence if refusal.channel_id in readable else None,
                    "at": refusal.created_at,
                }
                for refusal in refused
            ],
            "refusals_today": [
                {"reason": reason, "count": count} for reason, count in refused_today.items()
            ],
        }

    async def _picture(self, request: web.Request) -> web.Response:
        try:
            session = self._session(request)
        except LinkRefused as refused:
            return plain_text(str(refused), 403)
        shown = await queries.shown_picture(
            self._conn, session.guild_id, request.match_info["job"], int(request.match_info["idx"])
        )
        # A picture of a channel the admin cannot read is answered as a missing one.
        if shown is None or shown[1] is None or not await self._readable(session, {shown[1]}):
            return plain_text("No such picture here.", 404)
        path = shown[0]
        try:
            thumbnail = await asyncio.to_thread(_thumbnail, Path(path))
        except FileNotFoundError:  # pruned meanwhile
            return plain_text("No such picture here.", 404)
        return web.Response(body=thumbnail, content_type="image/jpeg", headers=SECURITY_HEADERS)


def _home(guild_id: int) -> str:
    return f"/dashboard/{guild_id}"


def _thumbnail(path: Path) -> bytes:
    with Image.open(path) as picture:
        small = picture.convert("RGB")
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
