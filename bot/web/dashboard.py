"""The admin dashboard: one server's live queue, the workers, its latest pictures, each
member's quota use today and what members were refused, for that server's admins (aiohttp;
no discord, no torch).

``/easel-admin dashboard`` gives an admin a sign-in link: signed for the dashboard, bound to
them and the server, 15 minutes, single use. Opening it (once Discord confirms they still
manage the server) sets a signed session cookie for that one server (HttpOnly,
SameSite=Strict, 8 hours, path ``/dashboard/<server>``), and every data route checks that the
cookie names the server of its URL and that Discord still says they manage it (asked again
every READING_RIGHTS_S); signing out ends the session for good. Private results never appear
(the queries leave them out, prompts included), those made private by their maker's /settings
after their submit too (``db.jobs.make_undelivered_private``). Refusals carry no prompt
(``bot.refusals``).

What members posted in a channel is shown only to an admin who may read that channel, by
Discord's rules (Manage Server is not View Channel, nor a place in a private thread): the
gallery and its picture route, queued jobs' prompts and what refused members were told. Who
did what, when and how much (members, kinds, reasons, channel ids, quota) is the server's
bookkeeping and shows whole. No age-restricted picture is shown (made in an age-restricted
channel, made in one that is now, or in a server that keeps its pictures there): nobody
age-gates a web page.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
from aiohttp import web

from bot.jobs.queue import JobQueue
from bot.jobs.stored_files import stored_file
from bot.memo import Memo
from bot.policy.moderation import NsfwPolicy, kept_in_age_restricted_channels
from bot.policy.quota import Period, period_start
from bot.web.links import LINK_LIFETIME_S, LinkRefused, LinkSigner
from bot.web.pages import dashboard_page, message_page
from bot.web.server import SECURITY_HEADERS, html_page, plain_text, refused_page
from bot.web.thumbnails import GALLERY_SIZE, DecodersBusy, Thumbnails
from db import dashboard as queries
from db import refusals
from db.guild_settings import GuildSettings

SESSION_LIFETIME_S = 8 * 60 * 60
COOKIE = "easel_dashboard"
REFUSALS_SHOWN = 20
# The queue rows a poll sends: the running jobs and those among the first QUEUE_SHOWN to start,
# this server's; the rest of its jobs are counted, not listed (a deep queue is not walked).
QUEUE_SHOWN = 100
# A server's picture channels and today's spending per member are read at most once this
# often, whatever the tabs open and their polls: both reads grow with the server's history.
# No writer tells these memos of a change (a job's end, a charge): by design, the page may
# show them this late, never later.
SERVER_READS_KEPT_S = 30.0
# The servers whose reads are kept, those asked last.
SERVERS_KEPT = 1_000
# Past the thumbnails' share of decodes (bot.web.thumbnails), or while Discord has not said
# whether the admin may read the picture's channel: 503, and the page asks again at its next
# poll.
RETRY_AFTER_S = 3
# How long an admin's reading rights, once asked of Discord, hold: the page polls every 3 s.
READING_RIGHTS_S = 15
_LOGIN, _SESSION = "dashboard-login", "dashboard-session"
_AGAIN = "run /easel-admin dashboard again"
_SIGNED_OUT = "You are not signed in to this server's dashboard; run /easel-admin dashboard there."
_NO_PICTURE = "No such picture here."


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
    nonce: str  # remembered as used once they sign out


@dataclass(frozen=True)
class AdminRights:
    """What Discord says of a member now: whether they may see the server's dashboard and,
    of the channels asked about, which they may read and which are age-restricted; of those
    they may not read, the ones Discord hides from Easel itself (nobody's reading is known)
    and the ones Discord did not answer about (asked again at a later poll)."""

    refusal: str | None  # why they may not (they no longer manage the server...), or None
    readable: frozenset[int] = frozenset()
    age_restricted: frozenset[int] = frozenset()
    hidden_from_easel: frozenset[int] = frozenset()
    unanswered: frozenset[int] = frozenset()
    discord_failed: bool = False  # the refusal: Discord did not say who the member is now


class ServerAdmins(Protocol):
    """Discord's answers the dashboard needs (``cogs.admin`` implements it)."""

    def name_of(self, guild_id: int) -> str: ...

    async def rights(
        self,
        guild_id: int,
        user_id: int,
        channel_ids: Collection[int],
        *,
        within_window: bool = False,
    ) -> AdminRights:
        """The member's rights now (one look at their roles), for ``channel_ids``;
        ``within_window``: their roles as asked at the start of this window will do."""
        ...


@dataclass
class _Asked:
    """One admin's rights as Discord told them within one READING_RIGHTS_S window."""

    at: float
    refusal: str | None
    channels: set[int] = field(default_factory=set)  # answered about
    readable: set[int] = field(default_factory=set)
    age_restricted: set[int] = field(default_factory=set)
    hidden_from_easel: set[int] = field(default_factory=set)
    unanswered: set[int] = field(default_factory=set)  # at the last ask: asked again

    def shown(self, channel_ids: Collection[int]) -> set[int]:
        """Of ``channel_ids``, those whose pictures the admin may see on a web page."""
        return {c for c in channel_ids if c in self.readable and c not in self.age_restricted}

    def unread_because(self, channel_id: int | None) -> str | None:
        """Why what was posted in a channel the admin may not read is not shown, where it is
        not the admin's own rights: "easel" (Discord hides it from Easel), "discord" (Discord
        did not answer)."""
        if channel_id in self.hidden_from_easel:
            return "easel"
        if channel_id in self.unanswered:
            return "discord"
        return None


class Dashboard:
    """Makes sign-in links and serves ``/dashboard/...`` on the bot's web server."""

    def __init__(
        self,
        signer: LinkSigner,
        public_url: str,
        conn: aiosqlite.Connection,
        queue: JobQueue,
        admins: ServerAdmins,
        guild_settings: Callable[[int], Awaitable[GuildSettings]],
        data_dir: Path,
    ) -> None:
        """``guild_settings``: a server's settings as the bot keeps them in memory
        (``GuildPolicy.settings``, dropped when an admin changes them), since the page polls
        every few seconds. ``data_dir``: ``EASEL_DATA_DIR``, where the pictures are."""
        self._signer = signer
        self._data_dir = data_dir
        self._public_url = public_url.rstrip("/")
        self._secure_cookie = self._public_url.startswith("https://")
        self._conn = conn
        self._queue = queue
        self._admins = admins
        self._guild_settings = guild_settings
        # Per server and admin: their rights within the current window.
        self._reading: dict[tuple[int, int], _Asked] = {}
        # Checked for visibility on every request before one is served from there.
        self._thumbnails = Thumbnails()
        self._picture_channels: Memo[int, frozenset[int]] = Memo(
            SERVERS_KEPT, ttl_s=SERVER_READS_KEPT_S
        )
        # By server and the day's start: a new day reads afresh.
        self._usage: Memo[tuple[int, float], tuple[queries.MemberUsage, ...]] = Memo(
            SERVERS_KEPT, ttl_s=SERVER_READS_KEPT_S
        )

    def link_for(self, user_id: int, guild_id: int) -> str:
        login = DashboardLogin(
            user_id, guild_id, int(self._signer.clock()) + LINK_LIFETIME_S, secrets.token_hex(16)
        )
        return f"{self._public_url}/dashboard/login/{self._signer.seal(_LOGIN, asdict(login))}"

    def routes(self) -> list[web.RouteDef]:
        home = "/dashboard/{guild:[0-9]{1,20}}"  # a snowflake's digits; longer ones are 404
        return [
            web.get("/dashboard/login/{token}", self._login),
            web.get(home, self._home),
            web.get(f"{home}/state", self._state),
            web.get(f"{home}/picture/{{job:[0-9a-f]{{16}}}}/{{idx:[0-9]}}", self._picture),
            web.post(f"{home}/logout", self._logout),
        ]

    async def close(self) -> None:
        """Stops the thumbnails' threads (with the web server, ``RegionWebServer.stop``)."""
        await self._thumbnails.close()

    # Signing in.

    async def _login(self, request: web.Request) -> web.Response:
        try:
            login = DashboardLogin(**self._signer.unseal(_LOGIN, request.match_info["token"]))
            self._signer.refuse_spent(login, _AGAIN)
            refusal = (await self._admins.rights(login.guild_id, login.user_id, ())).refusal
            if refusal is not None:
                raise LinkRefused(refusal)
            self._signer.use(login, _AGAIN)
        except LinkRefused as refused:
            return refused_page(refused)
        session = DashboardSession(
            login.user_id,
            login.guild_id,
            int(self._signer.clock()) + SESSION_LIFETIME_S,
            secrets.token_hex(16),
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
        try:
            session = DashboardSession(**self._signer.unseal(_SESSION, token))
        except TypeError:  # a session of an older Easel, without a nonce
            raise LinkRefused(_SIGNED_OUT) from None
        if session.guild_id != int(request.match_info["guild"]):
            raise LinkRefused(_SIGNED_OUT)
        if self._signer.clock() >= session.expires_at:
            raise LinkRefused("Your dashboard session has ended (8 hours); " + _AGAIN + ".")
        if self._signer.was_used(session):
            raise LinkRefused("You signed out of this dashboard; " + _AGAIN + ".")
        return session

    async def _logout(self, request: web.Request) -> web.Response:
        # Only with the session's own cookie, which SameSite=Strict keeps from other sites.
        try:
            session = self._session(request)
            self._signer.use(session, _AGAIN)  # refused from now on, wherever it was copied
        except LinkRefused as refused:
            return refused_page(refused)
        response = html_page(message_page("Signed out", "You signed out of the dashboard."))
        response.del_cookie(COOKIE, path=_home(session.guild_id))
        return response

    # The page and its data.

    def _page(self, guild_id: int) -> web.Response:
        home = _home(guild_id)
        return html_page(dashboard_page(home, f"{home}/state"))

    async def _home(self, request: web.Request) -> web.Response:
        # The frame holds no data; its script asks for the state with the session cookie. A
        # navigation from another site comes without the cookie: the frame, and the script
        # tells. With it, an admin who lost their rights is told here already.
        guild_id = int(request.match_info["guild"])
        if COOKIE in request.cookies:
            try:
                await self._rights(self._session(request), set())
            except LinkRefused as refused:
                return refused_page(refused)
        return self._page(guild_id)

    async def _state(self, request: web.Request) -> web.Response:
        try:
            state = await self.state(self._session(request))
        except LinkRefused as refused:
            return plain_text(str(refused), 403)
        return web.json_response(state, headers=SECURITY_HEADERS)

    async def _rights(self, session: DashboardSession, channel_ids: set[int]) -> _Asked:
        """The session's admin's rights, for ``channel_ids`` too; LinkRefused when Discord
        says they may no longer see the dashboard (no longer managing the server, gone from
        it). Asked of Discord once per window of READING_RIGHTS_S, and once more for each
        channel first seen within it (or Discord did not answer about), whatever the number
        of polls; those later asks reuse the member as asked at the window's start, and one
        Discord fails leaves the window's rights as they were. So an admin kicked, banned or
        stripped of Manage Server mid-window keeps the page until the window ends (within
        READING_RIGHTS_S, as for every right here), and is refused at the next."""
        key = (session.guild_id, session.user_id)
        now = self._signer.clock()
        asked = self._reading.get(key)
        fresh = asked is None or now - asked.at >= READING_RIGHTS_S
        if asked is None or fresh:
            asked = _Asked(now, None)
        unknown = channel_ids - asked.channels
        if fresh or unknown:
            rights = await self._admins.rights(
                session.guild_id, session.user_id, unknown, within_window=not fresh
            )
            if not fresh and rights.discord_failed:  # unanswered for now, not refused
                rights = AdminRights(asked.refusal, unanswered=frozenset(unknown))
            asked.refusal = rights.refusal
            asked.channels |= unknown - rights.unanswered
            asked.readable |= rights.readable
            asked.age_restricted |= rights.age_restricted
            asked.hidden_from_easel |= rights.hidden_from_easel
            asked.unanswered = (asked.unanswered - unknown) | rights.unanswered
            self._reading = {
                other: held
                for other, held in self._reading.items()
                if now - held.at < READING_RIGHTS_S
            }
            self._reading[key] = asked
        if asked.refusal is not None:
            raise LinkRefused(asked.refusal)
        return asked

    async def _keeps_pictures_age_restricted(self, guild_id: int) -> bool:
        """Whether the server keeps every picture in age-restricted channels (its policy)."""
        settings = await self._guild_settings(guild_id)
        return kept_in_age_restricted_channels(
            made_age_restricted=False, nsfw_policy=NsfwPolicy(settings.nsfw_policy)
        )

    async def state(self, session: DashboardSession) -> dict[str, Any]:
        """What the page shows, for one server only and as far as its admin may read;
        LinkRefused when they may no longer see it."""
        guild_id = session.guild_id
        snapshot = self._queue.snapshot(QUEUE_SHOWN)
        devices = {running.job.job_id: running.device for running in snapshot.running}
        positions = {job.job_id: place for place, job in enumerate(snapshot.queued)}
        awaiting_check = {job.job_id for job in snapshot.awaiting_check}
        now = time.time()
        listed = devices.keys() | positions.keys() | awaiting_check
        unfinished = sorted(
            await queries.unfinished_jobs(self._conn, guild_id, listed),
            key=lambda job: (positions.get(job.job_id, -1), job.created_at),  # unqueued first
        )
        unfinished_in_all = await queries.unfinished_count(self._conn, guild_id)
        channels = await self._picture_channels.get(guild_id, lambda: self._channels_of(guild_id))
        candidates = set(channels)
        refused = await refusals.latest(self._conn, guild_id, REFUSALS_SHOWN)
        candidates.update(job.channel_id for job in unfinished if job.channel_id is not None)
        candidates.update(r.channel_id for r in refused if r.channel_id is not None)
        rights = await self._rights(session, candidates)
        readable = candidates & rights.readable
        shown = set() if await self._keeps_pictures_age_restricted(guild_id) else candidates
        pictures = await queries.recent_pictures(
            self._conn, guild_id, rights.shown(shown), GALLERY_SIZE
        )
        today = period_start(Period.DAY, now)
        usage = await self._usage.get((guild_id, today), lambda: self._usage_since(guild_id, today))
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
                    "awaiting_check": job.job_id in awaiting_check,
                    "waited_s": max(0.0, now - job.created_at),
                    "readable": job.channel_id in readable,
                    "unread_because": rights.unread_because(job.channel_id),
                    "prompt": job.prompt if job.channel_id in readable else None,
                }
                for job in unfinished
            ],
            # This server's unfinished jobs further back than the rows (or just ended).
            "queue_more": max(0, unfinished_in_all - len(unfinished)),
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
                    "unread_because": rights.unread_because(refusal.channel_id),
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

    async def _channels_of(self, guild_id: int) -> frozenset[int]:
        return frozenset(await queries.picture_channels(self._conn, guild_id))

    async def _usage_since(self, guild_id: int, since: float) -> tuple[queries.MemberUsage, ...]:
        return tuple(await queries.usage_by_member(self._conn, guild_id, since))

    async def _picture(self, request: web.Request) -> web.Response:
        job_id, idx = request.match_info["job"], int(request.match_info["idx"])
        try:
            session = self._session(request)
            found = await queries.shown_picture(self._conn, session.guild_id, job_id, idx)
            channels = set() if found is None or found[1] is None else {found[1]}
            rights = await self._rights(session, channels)
        except LinkRefused as refused:
            return plain_text(str(refused), 403)
        if channels & rights.unanswered:  # not known yet: neither shown nor said missing
            return _again_soon("Discord did not say who may see this picture yet; try again.")
        # A picture the admin may not see here is answered as a missing one.
        if (
            found is None
            or not rights.shown(channels)
            or await self._keeps_pictures_age_restricted(session.guild_id)
        ):
            return plain_text(_NO_PICTURE, 404)
        try:
            picture = stored_file(self._data_dir, found[0])
            thumbnail = await self._thumbnails.get(session.guild_id, job_id, idx, picture)
        except FileNotFoundError:  # pruned meanwhile
            return plain_text(_NO_PICTURE, 404)
        except DecodersBusy:
            return _again_soon("Easel is busy making pictures ready; the page asks again.")
        return web.Response(body=thumbnail, content_type="image/jpeg", headers=SECURITY_HEADERS)


def _again_soon(why: str) -> web.Response:
    """503: the picture may be answered at the page's next poll."""
    busy = plain_text(why, 503)
    busy.headers["Retry-After"] = str(RETRY_AFTER_S)
    return busy


def _home(guild_id: int) -> str:
    return f"/dashboard/{guild_id}"
