"""The dashboard's routes on a real loopback socket over a real database (Discord's answers
stubbed): no age-restricted picture on the page (the server's policy read from memory, its
change followed at once), a session that ends with the admin's rights or when they sign out,
thumbnails made once on their own threads yet checked on every request, shared fairly between
servers and stopped with the server, the page's script in Chromium on a 503 and a 403, and
server ids past a snowflake's length answered 404."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import threading
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any, ClassVar, cast

import aiohttp
import aiosqlite
import pytest
from PIL import Image
from playwright.async_api import Page, Route, async_playwright

from bot.jobs.scheduler import FairScheduler, PriorityClass, QueuedJob, QueueSnapshot
from bot.policy.guild import GuildPolicy
from bot.policy.moderation import NsfwPolicy
from bot.web import dashboard, thumbnails
from bot.web.dashboard import COOKIE, READING_RIGHTS_S, AdminRights, Dashboard
from bot.web.links import LinkSigner, RegionLink
from bot.web.server import Claim, RegionWebServer
from bot.web.thumbnails import DecodersBusy, Thumbnails
from db import guild_settings
from tests.conftest import ErrorLogs
from tests.integration.test_web_server import free_port

GUILD, ADMIN, CHANNEL, NSFW_CHANNEL = 5, 77, 9, 10


class Admins:
    """Discord's answers: every channel readable, ``age_restricted`` ones age-restricted now,
    ``refusal`` once the admin lost their rights."""

    def __init__(self) -> None:
        self.refusal: str | None = None
        self.age_restricted: set[int] = set()

    def name_of(self, guild_id: int) -> str:
        return "server"

    async def rights(
        self,
        guild_id: int,
        user_id: int,
        channel_ids: Collection[int],
        *,
        within_window: bool = False,
    ) -> AdminRights:
        asked = frozenset(channel_ids)
        return AdminRights(self.refusal, asked, asked & self.age_restricted)


class Queue:
    """What the state reads of the JobQueue, over a real scheduler (nothing waiting unless a
    test submits), and the ``limit`` of each snapshot asked."""

    slots: ClassVar[list[Any]] = []

    def __init__(self) -> None:
        self.scheduler = FairScheduler()
        self.limits: list[int | None] = []
        self.awaiting_check: tuple[QueuedJob, ...] = ()  # handed out, held back by the queue

    def snapshot(self, limit: int | None = None) -> QueueSnapshot:
        self.limits.append(limit)
        snapshot = self.scheduler.snapshot(time.time(), limit)
        return dataclasses.replace(snapshot, awaiting_check=self.awaiting_check)

    def queued_count(self) -> int:
        return self.scheduler.queued_count


class Editor:
    async def picture(self, link: RegionLink) -> Path:
        raise AssertionError("the mask editor is not used here")

    async def submit(self, link: RegionLink, mask_png: bytes, prompt: str, claim: Claim) -> str:
        raise AssertionError("the mask editor is not used here")


@dataclasses.dataclass
class Site:
    conn: aiosqlite.Connection
    policy: GuildPolicy
    admins: Admins
    dashboard: Dashboard
    web: RegionWebServer
    clock: list[float]
    origin: str
    pictures: Path
    queue: Queue

    @property
    def home(self) -> str:
        return f"{self.origin}/dashboard/{GUILD}"

    def picture_url(self, job_id: str) -> str:
        return f"{self.home}/picture/{job_id}/0"

    async def add_picture(self, job_id: str, channel_id: int, *, age_restricted: bool) -> None:
        # Where the bot stores a result, named as the database names it (``stored_name``).
        name = f"images/{job_id}/0.png"
        path = self.pictures / name
        path.parent.mkdir(parents=True)
        Image.new("RGB", (640, 640), (200, 80, 80)).save(path)
        now = time.time()
        await self.conn.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at, finished_at, age_restricted, spoiler, private)"
            " VALUES (?, 'imagine', 'done', 1, ?, ?, '{\"prompt\": \"a picture\"}', ?, ?, ?, 0, 0)",
            (job_id, GUILD, channel_id, now, now, age_restricted),
        )
        await self.conn.execute(
            "INSERT INTO images (job_id, idx, seed, path, infotext, width, height)"
            " VALUES (?, 0, 1, ?, '', 640, 640)",
            (job_id, name),
        )
        await self.conn.commit()

    async def gallery(self, http: aiohttp.ClientSession) -> set[str]:
        async with http.get(f"{self.home}/state") as answer:
            assert answer.status == 200
            return {picture["job"] for picture in (await answer.json())["gallery"]}

    async def signed_in(self) -> aiohttp.ClientSession:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with http.get(self.dashboard.link_for(ADMIN, GUILD)) as answer:
            assert answer.status == 200
        return http


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[Page]:
    """A page of a Chromium started for the test, closed at the end."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


@pytest.fixture
async def site(tmp_path: Path, conn: aiosqlite.Connection) -> AsyncIterator[Site]:
    clock = [time.time()]
    signer = LinkSigner(b"s" * 32, tmp_path / "used", clock=lambda: clock[0])
    admins = Admins()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    policy = GuildPolicy(conn, prompts=cast(Any, None))  # its settings only
    queue = Queue()
    board = Dashboard(signer, origin, conn, cast(Any, queue), admins, policy.settings, tmp_path)
    web = RegionWebServer(signer, Editor(), origin, "127.0.0.1", port, more_pages=(board,))
    await web.start()
    try:
        yield Site(conn, policy, admins, board, web, clock, origin, tmp_path, queue)
    finally:
        await web.stop()


async def test_age_restricted_pictures_stay_off_the_dashboard(site: Site) -> None:
    """Made in an age-restricted channel (journaled), made in a channel that is one now, or
    in a server that keeps its pictures in those: nobody age-gates a web page."""
    plain, made_restricted, restricted_now = (
        "00000000000000a1",
        "00000000000000a2",
        "00000000000000a3",
    )
    await site.add_picture(plain, CHANNEL, age_restricted=False)
    await site.add_picture(made_restricted, CHANNEL, age_restricted=True)
    await site.add_picture(restricted_now, NSFW_CHANNEL, age_restricted=False)
    site.admins.age_restricted = {NSFW_CHANNEL}
    http = await site.signed_in()
    async with http:
        assert await site.gallery(http) == {plain}
        for job_id in (plain, made_restricted, restricted_now):
            async with http.get(site.picture_url(job_id)) as answer:
                assert answer.status == (200 if job_id == plain else 404), job_id
        await site.policy.set_nsfw_policy(GUILD, ADMIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
        assert await site.gallery(http) == set()
        async with http.get(site.picture_url(plain)) as answer:
            assert answer.status == 404


async def test_a_session_ends_with_the_admins_rights_and_when_they_sign_out(site: Site) -> None:
    job_id = "00000000000000b1"
    await site.add_picture(job_id, CHANNEL, age_restricted=False)
    http = await site.signed_in()
    async with http:
        [cookie] = list(http.cookie_jar)
        assert await site.gallery(http) == {job_id}
        site.admins.refusal = "You no longer have the Manage Server permission there."
        site.clock[0] += READING_RIGHTS_S  # asked again at the next window
        for route in (f"{site.home}/state", site.picture_url(job_id), site.home):
            async with http.get(route) as answer:
                assert answer.status == 403, route
                assert "no longer have the Manage Server permission" in await answer.text()
        site.admins.refusal = None
        site.clock[0] += READING_RIGHTS_S
        assert await site.gallery(http) == {job_id}

        async with (  # no cookie: another site's form
            aiohttp.ClientSession() as stranger,
            stranger.post(f"{site.home}/logout") as answer,
        ):
            assert answer.status == 403
        assert await site.gallery(http) == {job_id}
        async with http.post(f"{site.home}/logout") as answer:
            assert answer.status == 200 and "signed out" in await answer.text()
            assert answer.cookies[COOKIE]["max-age"] == "0"  # the browser forgets it
        assert not list(http.cookie_jar)
    # The cookie copied before is refused from now on.
    async with (
        aiohttp.ClientSession(cookies={COOKIE: cookie.value}) as copied,
        copied.get(f"{site.home}/state") as answer,
    ):
        assert answer.status == 403 and "signed out" in await answer.text()


async def test_thumbnails_are_made_once_on_their_own_threads_yet_checked_each_time(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = "00000000000000c1"
    await site.add_picture(job_id, CHANNEL, age_restricted=False)
    decoded_on: list[str] = []
    make = thumbnails.make_thumbnail

    def recorded(path: Path) -> bytes:
        decoded_on.append(threading.current_thread().name)
        return make(path)

    monkeypatch.setattr(thumbnails, "make_thumbnail", recorded)
    http = await site.signed_in()
    async with http:
        for _ in range(3):
            async with http.get(site.picture_url(job_id)) as answer:
                assert answer.status == 200 and answer.content_type == "image/jpeg"
        assert len(decoded_on) == 1 and decoded_on[0].startswith("thumbnails")
        # Withdrawn by a moderator (or its channel age-restricted now): never from the cache.
        site.admins.age_restricted = {CHANNEL}
        site.clock[0] += READING_RIGHTS_S
        async with http.get(site.picture_url(job_id)) as answer:
            assert answer.status == 404
        site.admins.age_restricted = set()
        site.clock[0] += READING_RIGHTS_S
        await site.conn.execute("UPDATE jobs SET withdrawn_at = 1 WHERE id = ?", (job_id,))
        await site.conn.commit()
        async with http.get(site.picture_url(job_id)) as answer:
            assert answer.status == 404
    assert len(decoded_on) == 1


async def test_a_picture_is_decoded_once_at_a_time_and_waiting_decodes_are_capped(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests for a picture being decoded wait for that decode; past the cap on decodes
    under way, a 503 with Retry-After, and the picture is served when asked again."""
    monkeypatch.setattr(thumbnails, "THUMBNAILS_PENDING", 1)
    one, other = "00000000000000e1", "00000000000000e2"
    await site.add_picture(one, CHANNEL, age_restricted=False)
    await site.add_picture(other, CHANNEL, age_restricted=False)
    release = threading.Event()
    decoded: list[str] = []
    make = thumbnails.make_thumbnail

    def held(path: Path) -> bytes:
        decoded.append(path.parent.name)  # its job's folder: images/<job id>/0.png
        release.wait(30)
        return make(path)

    monkeypatch.setattr(thumbnails, "make_thumbnail", held)
    entered = 0
    thumbnail = site.dashboard._thumbnails.get

    async def counted(guild_id: int, job_id: str, idx: int, path: Path) -> bytes:
        nonlocal entered
        entered += 1
        return await thumbnail(guild_id, job_id, idx, path)

    monkeypatch.setattr(site.dashboard._thumbnails, "get", counted)
    http = await site.signed_in()
    async with http:

        async def answered(job_id: str) -> tuple[int, str | None]:
            async with http.get(site.picture_url(job_id)) as answer:
                await answer.read()
                return answer.status, answer.headers.get("Retry-After")

        same = [asyncio.create_task(answered(one)) for _ in range(3)]
        async with asyncio.timeout(30):
            while entered < 3:  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.01)
        busy = (503, str(dashboard.RETRY_AFTER_S))
        assert await answered(other) == busy
        release.set()
        assert await asyncio.gather(*same) == [(200, None)] * 3
        assert await answered(other) == (200, None)
    assert decoded == [one, other]


@pytest.fixture
async def held_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Thumbnails, list[str], threading.Event]]:
    """Thumbnails whose decodes of files named ``held…`` wait for the event (set at the end
    whatever happens, so no decoder thread stays held); every decode's file name, in the order
    the threads took them; each thumbnail is its file's name."""
    release = threading.Event()
    decoded: list[str] = []

    def held(path: Path) -> bytes:
        decoded.append(path.name)
        if path.name.startswith("held"):
            release.wait(30)
        return path.name.encode()

    monkeypatch.setattr(thumbnails, "make_thumbnail", held)
    made = Thumbnails()
    try:
        yield made, decoded, release
    finally:
        release.set()
        await made.close()


def queue_held(made: Thumbnails, guild_id: int, count: int) -> list[asyncio.Task[bytes]]:
    return [
        asyncio.create_task(made.get(guild_id, f"{guild_id:08x}{n:08x}", 0, Path(f"held{n}")))
        for n in range(count)
    ]


async def test_one_servers_decodes_and_cache_leave_room_for_another(
    held_decodes: tuple[Thumbnails, list[str], threading.Event],
) -> None:
    """An admin cycling through their own server's pictures fills that server's share of
    pending decodes and evicts that server's thumbnails: another server's are still decoded,
    and those it keeps stay kept."""
    made, decoded, release = held_decodes
    one, other = GUILD, GUILD + 1
    # The other server's admin has a picture kept; then the first server's decodes pile up.
    assert await made.get(other, "0000000000000ab0", 0, Path("kept")) == b"kept"
    share = thumbnails.THUMBNAILS_PENDING_PER_SERVER
    pending = queue_held(made, one, share)
    await asyncio.sleep(0)  # each has asked
    with pytest.raises(DecodersBusy):
        await made.get(one, f"{share:016x}", 0, Path("refused"))
    # Queued behind the first server's decodes (the threads are held here), not refused.
    served = asyncio.create_task(made.get(other, "0000000000000ab1", 0, Path("served")))
    await asyncio.sleep(0)
    assert not served.done()
    release.set()
    assert len(await asyncio.gather(*pending)) == share and await served == b"served"
    for n in range(share, share + thumbnails.THUMBNAILS_KEPT):  # the cache churned by one
        await made.get(one, f"{n:016x}", 0, Path(f"churn{n}"))
    assert await made.get(other, "0000000000000ab0", 0, Path("kept")) == b"kept"
    assert decoded.count("kept") == 1 and "refused" not in decoded


async def test_the_threads_take_the_servers_waiting_decodes_in_turn(
    held_decodes: tuple[Thumbnails, list[str], threading.Event],
) -> None:
    """A server with one picture to make waits behind one decode of the server that asked
    for a whole gallery first, not behind all of them."""
    made, decoded, release = held_decodes
    gallery = queue_held(made, GUILD, thumbnails.THUMBNAILS_PENDING_PER_SERVER)
    await asyncio.sleep(0)
    one = asyncio.create_task(made.get(GUILD + 1, "00000000000000f1", 0, Path("one")))
    await asyncio.sleep(0)
    release.set()
    assert await one == b"one"
    await asyncio.gather(*gallery)
    # Two decodes were under way; then the first server's turn and the second's, either way.
    assert decoded.index("one") in {2, 3}


async def test_a_full_queue_makes_room_for_a_server_holding_fewer(
    held_decodes: tuple[Thumbnails, list[str], threading.Event],
) -> None:
    """Admins of four servers fill every pending place: a fifth server's admin still gets a
    decode, which the server holding the most gives up (its newest waiting one, a 503 for
    that page); that server asking again is refused, as it would take the place back."""
    made, decoded, release = held_decodes
    share = thumbnails.THUMBNAILS_PENDING_PER_SERVER
    servers = thumbnails.THUMBNAILS_PENDING // share
    waiting = {guild: queue_held(made, guild, share) for guild in range(1, servers + 1)}
    await asyncio.sleep(0)
    fifth = asyncio.create_task(made.get(servers + 1, "00000000000000f5", 0, Path("fifth")))
    every = [task for tasks in waiting.values() for task in tasks]
    await asyncio.wait(every, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    given_up = [
        (guild, n)
        for guild, tasks in waiting.items()
        for n, task in enumerate(tasks)
        if task.done() and isinstance(task.exception(), DecodersBusy)
    ]
    assert len(given_up) == 1 and given_up[0][1] == share - 1  # the newest of one server
    with pytest.raises(DecodersBusy):
        await made.get(given_up[0][0], "00000000000000f6", 0, Path("again"))
    release.set()
    assert await fifth == b"fifth"
    answered = await asyncio.gather(*every, return_exceptions=True)
    assert sum(isinstance(answer, bytes) for answer in answered) == servers * share - 1
    assert "again" not in decoded


async def test_the_thumbnail_threads_end_with_the_server(site: Site) -> None:
    job_id = "00000000000000c2"
    await site.add_picture(job_id, CHANNEL, age_restricted=False)
    http = await site.signed_in()
    async with http, http.get(site.picture_url(job_id)) as answer:
        assert answer.status == 200
    decoders = [t for t in threading.enumerate() if t.name.startswith("thumbnails")]
    assert decoders
    await site.web.stop()
    assert not any(thread.is_alive() for thread in decoders)


async def test_the_nsfw_policy_is_read_from_memory_and_its_change_shows_at_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls read the server's settings as the bot keeps them (not the database each time);
    an admin's change drops them, so the next poll follows it."""
    job_id = "00000000000000c3"
    await site.add_picture(job_id, CHANNEL, age_restricted=False)
    reads = 0
    read = guild_settings.get

    async def counted(conn: aiosqlite.Connection, guild_id: int) -> guild_settings.GuildSettings:
        nonlocal reads
        reads += 1
        return await read(conn, guild_id)

    monkeypatch.setattr(guild_settings, "get", counted)
    http = await site.signed_in()
    async with http:
        for _ in range(3):
            assert await site.gallery(http) == {job_id}
            async with http.get(site.picture_url(job_id)) as answer:
                assert answer.status == 200
        assert reads == 1
        await site.policy.set_nsfw_policy(GUILD, ADMIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
        reads = 0  # the change reads the old value for its audit line
        assert await site.gallery(http) == set()
    assert reads == 1


async def test_the_page_asks_again_after_a_503_and_clears_itself_on_a_403(site: Site) -> None:
    """In Chromium: a state or a thumbnail answered 503 (busy) is asked for again at the next
    poll and the page keeps what it shows; a 403 (rights lost) empties the page."""
    job_id = "00000000000000c4"
    await site.add_picture(job_id, CHANNEL, age_restricted=False)
    busy: list[str] = []

    async def first_answer_busy(route: Route) -> None:
        kind = "state" if route.request.url.endswith("/state") else "picture"
        if kind not in busy:
            busy.append(kind)
            await route.fulfill(status=503, body="Too many connections.", headers={})
        else:
            await route.continue_()

    async with chromium_page() as page:
        await page.route(f"{site.home}/state", first_answer_busy)
        await page.route(f"{site.home}/picture/**", first_answer_busy)
        await page.goto(site.dashboard.link_for(ADMIN, GUILD))
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery img')].some((i) => i.naturalWidth > 0)"
        )
        assert busy == ["state", "picture"]
        site.admins.refusal = "You no longer have the Manage Server permission there."
        site.clock[0] += READING_RIGHTS_S
        await page.wait_for_selector("text=no longer have the Manage Server permission")
        assert await page.query_selector("#gallery") is None


async def test_polls_within_a_while_read_the_servers_history_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reads that grow with a server's history (its picture channels, today's spending per
    member) are kept SERVER_READS_KEPT_S per server: two polls, from two tabs, read them once."""
    await site.add_picture("a" * 16, CHANNEL, age_restricted=False)
    reads: list[tuple[str, int]] = []
    for name in ("picture_channels", "usage_by_member"):
        read = getattr(dashboard.queries, name)

        async def counted(
            conn: aiosqlite.Connection,
            guild_id: int,
            *more: Any,
            _read: Any = read,
            _name: str = name,
        ) -> Any:
            reads.append((_name, guild_id))
            return await _read(conn, guild_id, *more)

        monkeypatch.setattr(dashboard.queries, name, counted)
    first, second = await site.signed_in(), await site.signed_in()
    async with first, second:
        assert await site.gallery(first) == {"a" * 16}
        assert await site.gallery(second) == {"a" * 16}
    assert sorted(reads) == [("picture_channels", GUILD), ("usage_by_member", GUILD)]


async def test_a_deep_queue_lists_its_first_jobs_and_counts_the_rest(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll walks the fair order only QUEUE_SHOWN jobs deep and lists this server's among
    them, in order; the page says how many more of its jobs wait further back."""
    monkeypatch.setattr(dashboard, "QUEUE_SHOWN", 10)
    now = time.time()
    for index in range(30):
        guild = GUILD if index % 3 else GUILD + 1  # every third job is another server's
        job_id = f"{index:016x}"
        site.queue.scheduler.submit(
            QueuedJob(job_id, 100 + index, guild, ("m",), PriorityClass.STANDARD, now + index)
        )
        await site.conn.execute(
            "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
            " created_at) VALUES (?, 'imagine', 'queued', ?, ?, ?, '{\"prompt\": \"a kite\"}', ?)",
            (job_id, 100 + index, guild, CHANNEL, now + index),
        )
    await site.conn.commit()
    http = await site.signed_in()
    async with http, http.get(f"{site.home}/state") as answer:
        state = await answer.json()
    # Of the first 10 to start, jobs 1, 2, 4, 5, 7, 8 are this server's; 14 more wait behind.
    assert [row["job"] for row in state["queue"]] == [f"{i:016x}" for i in (1, 2, 4, 5, 7, 8)]
    assert [row["position"] for row in state["queue"]] == [2, 3, 5, 6, 8, 9]
    assert (state["queue_more"], state["waiting_in_all"]) == (14, 30)
    assert site.queue.limits == [10]

    async with chromium_page() as page:
        await page.goto(site.dashboard.link_for(ADMIN, GUILD))
        await page.wait_for_selector("#queue-more:not([hidden])")
        assert await page.inner_text("#queue-more") == (
            "… and 14 more of this server's jobs, further back."
        )
        assert len(await page.query_selector_all("#queue tbody tr")) == 6
        assert not await page.is_visible("#queue-empty")


async def test_a_restored_job_awaiting_its_check_shows_as_waiting_on_no_device(
    site: Site,
) -> None:
    """A restored job handed out and held back until Discord answers about its maker
    (``JobQueue._wait_to_start``) renders nowhere: listed as waiting for the check."""
    now = time.time()
    held = QueuedJob("a" * 16, 100, GUILD, ("m",), PriorityClass.STANDARD, now)
    site.queue.awaiting_check = (held,)
    await site.conn.execute(
        "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
        " created_at) VALUES (?, 'imagine', 'queued', 100, ?, ?, '{\"prompt\": \"a kite\"}', ?)",
        (held.job_id, GUILD, CHANNEL, now),
    )
    await site.conn.commit()
    http = await site.signed_in()
    async with http, http.get(f"{site.home}/state") as answer:
        state = await answer.json()
    [row] = state["queue"]
    assert (row["job"], row["status"], row["device"]) == (held.job_id, "queued", None)
    assert (row["position"], row["awaiting_check"]) == (None, True)

    async with chromium_page() as page:
        await page.goto(site.dashboard.link_for(ADMIN, GUILD))
        await page.wait_for_selector("#queue tbody tr")
        assert "waiting for the start-up check" in await page.inner_text("#queue tbody tr")


async def test_a_server_id_past_a_snowflakes_length_is_not_found(
    site: Site,
    error_logs: ErrorLogs,  # no traceback logged
) -> None:
    http = await site.signed_in()
    async with http:
        for digits in (21, 4301):  # 4301: past Python's int() limit
            home = f"{site.origin}/dashboard/{'1' * digits}"
            for route in (home, f"{home}/state", f"{home}/picture/00000000000000d1/0"):
                async with http.get(route) as answer:
                    assert answer.status == 404, (digits, route)
