"""EASEL_ALLOWED_SERVERS: the operator's list of the servers Easel serves. A server left out
gets one answer to everything (commands, clicks, message menus; no autocomplete choices) and
nothing is queued there; a server that adds Easel while it runs is left at once; one it is in
at READY is named and refused, never left. With no list, a public application is named at
the start. Two servers on the fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence

import discord
import pytest

from bot import app
from bot.app import EaselBot, build
from bot.jobs.queue import SERVER_NOT_SERVED, FinishedJob, job_queue
from bot.jobs.queue.values import INTERNAL_FAILURE
from bot.settings import Settings
from cogs import contexts
from cogs.contexts import NOT_ENABLED_HERE
from cogs.results import posting
from cogs.results.posting import DiscordResults
from db import jobs as journal
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, calls_held, forget_me, images_today
from tests.fake_discord import AddedGuild, FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.pictures import has_picture

B_MEMBER = 7101
WAIT_S = 30.0
LEAVE = ("DELETE", "/users/@me/guilds/{guild}")
PUBLIC = "the Discord application is public"
NOT_JOINED = 4242  # a listed id Easel is in no server of


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: commands synced to one server would exist there only.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


def serving(settings: Settings, *guild_ids: int) -> Settings:
    return settings.model_copy(update={"allowed_servers": frozenset(guild_ids)})


def in_channel(fake: FakeDiscord, channel_id: int) -> list[int]:
    """The ids of the messages in ``channel_id``, not deleted."""
    return [m.id for m in fake.messages.values() if m.channel_id == channel_id and not m.deleted]


async def logged(caplog: pytest.LogCaptureFixture, matches: Callable[[str], bool]) -> str:
    """The first WARNING ``matches``, once it is logged (listeners run as tasks)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            for record in caplog.records:
                if record.levelno == logging.WARNING and matches(message := record.getMessage()):
                    return message
            await asyncio.sleep(0.05)


async def queued_in_b_at_the_stop(
    fake: FakeDiscord, settings: Settings, places: Sequence[AddedGuild]
) -> tuple[InteractionHandle, list[str]]:
    """Easel serving every server: server A's render holds the device, a job of B's member is
    queued in each of ``places`` (servers other than A) behind it, in that order, and Easel
    stops (``SHUTDOWN_GRACE_S`` short: A's render is abandoned). A's interaction, and B's
    member's job ids, in the order queued."""
    held = HeldEngine()
    async with running_bot(fake, build(settings, lambda device: held)) as bot:
        blocker = await fake.invoke_command("imagine", {"prompt": "a's blocker", **QUICK})
        await blocker.wait_for_original(lambda message: not message.is_loading, timeout=WAIT_S)
        assert await asyncio.to_thread(held.started.wait, RENDER_TIMEOUT_S)
        job_ids: list[str] = []
        for number, place in enumerate(places):
            waiting = await fake.invoke_command(
                "imagine",
                {"prompt": f"b's barn {number}", **QUICK},
                user=B_MEMBER,
                channel=place.channel_id,
            )
            await waiting.wait_for_original(lambda message: not message.is_loading, timeout=WAIT_S)
            lines = await bot.services.history.unfinished(B_MEMBER, guild_id=place.guild_id)
            [job_id] = {line.job_id for line in lines} - set(job_ids)
            job_ids.append(job_id)
        for place in {place.guild_id: place for place in places}.values():
            queued_there = places.count(place)
            assert await images_today(bot.services, B_MEMBER, place.guild_id) == queued_there
    return blocker, job_ids


async def all_delivered(bot: EaselBot) -> None:
    """Waits until every ended job's outcome was delivered (posted, or withheld)."""
    conn = bot._db
    assert conn is not None
    async with asyncio.timeout(WAIT_S):
        while await journal.finished_undelivered(conn):  # noqa: ASYNC110 (the journal's)
            await asyncio.sleep(0.05)


def dms_to(fake: FakeDiscord, user_id: int) -> list[str]:
    return [
        m.content for m in fake.messages.values() if m.channel_id == fake.dm_channel_of(user_id)
    ]


async def test_a_server_left_out_is_refused_everything_and_nothing_is_queued(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server B's member made a picture before the operator listed only server A. After the
    restart, B's /imagine, a button and a message menu on that picture are answered that Easel
    is not enabled there, B's autocomplete offers nothing, nothing is queued or charged; A is
    served as before. Easel stays in B (named at READY), because a typo in the list must not
    take it out of every server. /forget-me alone is served in B."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    async with running_bot(fake, build(easel_settings_for_test)):
        made = await fake.invoke_command(
            "imagine", {"prompt": "b's barn", **QUICK}, user=B_MEMBER, channel=other.channel_id
        )
        picture = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake, build(serving(easel_settings_for_test, fake.guild_id))) as bot:
        named = await logged(caplog, lambda message: str(other.guild_id) in message)
        assert "not in EASEL_ALLOWED_SERVERS" in named, named
        refusals = [
            await fake.invoke_command(
                "imagine", {"prompt": "again", **QUICK}, user=B_MEMBER, channel=other.channel_id
            ),
            await fake.click(picture, label="Vary (Subtle)", user=B_MEMBER),
            await fake.invoke_message_command("Upscale", picture, user=B_MEMBER),
        ]
        for handle in refusals:
            answer = await handle.wait_for_original(timeout=WAIT_S)
            assert answer.content == NOT_ENABLED_HERE, handle.describe()
            assert answer.is_ephemeral
        offered_b = await fake.autocomplete(
            "imagine",
            {"prompt": "a", "model": ""},
            "model",
            user=B_MEMBER,
            channel=other.channel_id,
        )
        assert offered_b == []
        offered_a = await fake.autocomplete("imagine", {"prompt": "a", "model": ""}, "model")
        assert offered_a != []

        # Server A is served: its render is the next job, B's three refusals queued none.
        served = await fake.invoke_command("imagine", {"prompt": "a's barn", **QUICK})
        await served.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        history = bot.services.history
        assert await history.unfinished(B_MEMBER, guild_id=other.guild_id) == []
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 1
        assert bot.get_guild(other.guild_id) is not None

        # /forget-me alone is served there: B's member shares no listed server with Easel and
        # DMs are off, so it is their one way to erase what Easel keeps of them.
        forget = await forget_me(fake, user=B_MEMBER, channel=other.channel_id)
        erased = await forget.wait_for_original(lambda m: m.content.startswith("Done"))
        assert "erased 1 job" in erased.content, erased.content
    assert fake.calls_to(*LEAVE) == []


@pytest.mark.parametrize("another_as_the_gateway_closes", [False, True], ids=["one", "late"])
async def test_an_answer_to_a_server_left_out_still_unsent_at_the_stop_is_ended(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    another_as_the_gateway_closes: bool,
) -> None:
    """The answer "not enabled here" runs in the background; one Discord still holds when
    Easel stops is waited for, then cancelled before the HTTP session closes: nothing of it
    outlives the stop. ``another_as_the_gateway_closes``: an interaction the gateway parses
    while discord.py closes (after that wait) is ended too."""
    monkeypatch.setattr(app, "HANDLER_GRACE_S", 0.2)  # the stop's wait for it
    answering = asyncio.Event()
    answers: list[asyncio.Event] = []  # each answer's end

    async def held(interaction: object) -> None:
        answering.set()
        answers.append(ended := asyncio.Event())
        try:
            await asyncio.Event().wait()  # Discord never answers
        finally:
            ended.set()

    monkeypatch.setattr(contexts, "_answer_unserved", held)
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    async with running_bot(fake, build(serving(easel_settings_for_test, fake.guild_id))) as bot:
        refused = await fake.invoke_command(
            "imagine", {"prompt": "b's barn", **QUICK}, user=B_MEMBER, channel=other.channel_id
        )
        async with asyncio.timeout(WAIT_S):
            await answering.wait()
        assert not answers[0].is_set()
        if another_as_the_gateway_closes:
            close = discord.Client.close
            again = {**refused.payload, "id": str(int(refused.payload["id"]) + 1)}

            async def parsed_as_it_closes(client: discord.Client) -> None:
                bot._connection.parsers["INTERACTION_CREATE"](again)
                await close(client)

            monkeypatch.setattr(discord.Client, "close", parsed_as_it_closes)
    assert len(answers) == (2 if another_as_the_gateway_closes else 1)
    assert all(ended.is_set() for ended in answers)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "easel-unserved-server"]


async def test_jobs_a_server_left_out_queued_before_the_restart_never_render(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server B's member queued a job behind server A's render; Easel stopped (A's render
    abandoned), and started again with only A listed. A's job renders again; B's is ended at
    the start, never rendered nor posted in B, refunded, its maker told why by DM, and the
    queue holds nothing of it."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    blocker, [b_job] = await queued_in_b_at_the_stop(fake, easel_settings_for_test, [other])
    b_posts = in_channel(fake, other.channel_id)

    caplog.set_level(logging.WARNING, logger="bot.jobs.queue.job_queue")
    engine = HeldEngine()
    settings = serving(easel_settings_for_test, fake.guild_id)
    async with running_bot(fake, build(settings, lambda device: engine)) as bot:
        conn = bot._db
        assert conn is not None
        with engine:
            # Ended at the start, not at its turn behind A's render, which is held.
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            job = await journal.get_job(conn, b_job)
            assert job is not None and job.status is journal.JobStatus.CANCELLED, job
            assert job.error == SERVER_NOT_SERVED
            assert job.stopped_by is journal.StoppedBy.IMPOSED  # Easel's doing, no moderator's
            assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
        await blocker.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        told = await fake.wait_for_channel_message(
            lambda m: b_job in m.content, channel=fake.dm_channel_of(B_MEMBER), timeout=WAIT_S
        )
        assert f"was not posted: {SERVER_NOT_SERVED}" in told.content, told.content
        assert "does not count against your quota" in told.content, told.content
        assert bot.queue.queued_count() == 0
        assert b_job not in {line.job.job_id for line in bot.queue.snapshot().running}
    assert [request.prompt for request in engine.rendered] == ["a's blocker"]
    assert in_channel(fake, other.channel_id) == b_posts  # nothing new posted in B
    assert not any(has_picture(fake.messages[message_id]) for message_id in b_posts)
    [cancelled] = [r.getMessage() for r in caplog.records if b_job in r.getMessage()]
    assert "not in EASEL_ALLOWED_SERVERS" in cancelled, cancelled


@pytest.mark.parametrize("outcome", [journal.JobStatus.DONE, journal.JobStatus.FAILED])
async def test_an_outcome_of_a_server_left_out_ended_before_the_restart_is_not_posted(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    outcome: journal.JobStatus,
) -> None:
    """Server B's job rendered (or failed), and Easel stopped before posting it; started again
    with only A listed, it posts nothing in B (no new message, and its progress message shows
    neither picture nor failure), the job is uncharged (a result refunded) and its maker told
    by DM."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held post is abandoned
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    engine = InstantEngine(fail_on="boom")
    prompt = "boom barn" if outcome is journal.JobStatus.FAILED else "b's barn"
    async with running_bot(fake, build(easel_settings_for_test, lambda d: engine)) as bot:
        calls_held(bot.results, "deliver", monkeypatch)
        await fake.invoke_command(
            "imagine", {"prompt": prompt, **QUICK}, user=B_MEMBER, channel=other.channel_id
        )
        conn = bot._db
        assert conn is not None
        ended: list[journal.JobRecord] = []
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            while not ended:  # polled: the state is the journal's
                await asyncio.sleep(0.05)
                ended = await journal.jobs_with_status(conn, outcome)
        [job] = ended
    b_posts = in_channel(fake, other.channel_id)

    settings = serving(easel_settings_for_test, fake.guild_id)
    async with running_bot(fake, build(settings, lambda d: InstantEngine())) as bot:
        told = await fake.wait_for_channel_message(
            lambda m: job.id in m.content, channel=fake.dm_channel_of(B_MEMBER), timeout=WAIT_S
        )
        assert f"was not posted: {SERVER_NOT_SERVED}" in told.content, told.content
        assert "does not count against your quota" in told.content, told.content
        await all_delivered(bot)
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
    assert in_channel(fake, other.channel_id) == b_posts  # nothing new posted in B
    shown = [fake.messages[message_id] for message_id in b_posts]
    assert not any(has_picture(message) for message in shown)
    failure = INTERNAL_FAILURE.split(",")[0]
    assert not any(failure in message.content for message in shown), shown


@pytest.mark.parametrize("named_at_most", [None, 2], ids=["one-dm", "two-dms"])
async def test_a_members_jobs_ended_for_a_server_left_out_are_told_in_one_dm_naming_it(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    named_at_most: int | None,
) -> None:
    """B's member had three jobs queued at the stop; the start with only A listed ends them
    all and tells them in one DM naming each job and the server, which the gateway has not
    described yet: Discord's READY is held until that DM is sent, and the name is asked.
    ``named_at_most``: a DM names so many at most, the rest go in the next."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    if named_at_most is not None:
        monkeypatch.setattr(posting, "NAMED_IN_ONE_DM", named_at_most)
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    _, b_jobs = await queued_in_b_at_the_stop(fake, easel_settings_for_test, [other] * 3)
    assert len(b_jobs) == 3

    dispatch = fake.gateway.dispatch

    async def ready_once_told(event: str, data: dict[str, object]) -> None:
        if event == "READY":
            with contextlib.suppress(TimeoutError):  # not told: the assertions below say so
                await fake.wait_for_channel_message(
                    lambda m: b_jobs[0] in m.content,
                    channel=fake.dm_channel_of(B_MEMBER),
                    timeout=WAIT_S,
                )
        await dispatch(event, data)

    monkeypatch.setattr(fake.gateway, "dispatch", ready_once_told)
    settings = serving(easel_settings_for_test, fake.guild_id)
    engine = InstantEngine()
    starting = build(settings, lambda d: engine)
    async with running_bot(fake, starting, ready_timeout=2 * WAIT_S) as bot:
        await all_delivered(bot)
    told = [dm for dm in dms_to(fake, B_MEMBER) if any(job in dm for job in b_jobs)]
    assert [sum(job in dm for dm in told) for job in b_jobs] == [1, 1, 1], told
    first = told[0]
    named = [sum(job in dm for job in b_jobs) for dm in told]
    assert named == ([3] if named_at_most is None else [2, 1]), told
    assert first.startswith("Your jobs ") and " in Server B were not posted: " in first, told
    uncharged = ("They do not count against your quota.", "It does not count against your quota.")
    assert all(dm.endswith(uncharged) for dm in told), told


@pytest.mark.parametrize("stopped", ["after-the-dm", "before-the-dm"])
async def test_a_restart_between_a_members_deliveries_names_each_job_in_one_dm(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    stopped: str,
) -> None:
    """B's member had three jobs queued at the stop; the start with only A listed ends them,
    and the first one's delivery sends the DM naming all three. Easel stops after that DM,
    before the other two are delivered, or (``before-the-dm``) while it is being sent. The
    next start names each job in one DM in all: which DM names a job is kept in the
    database, not in the process's memory, and a DM that did not go is sent then."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    _, b_jobs = await queued_in_b_at_the_stop(fake, easel_settings_for_test, [other] * 3)
    settings = serving(easel_settings_for_test, fake.guild_id)

    held_there = asyncio.Event()
    method = "_tell_maker" if stopped == "before-the-dm" else "deliver"
    call = getattr(DiscordResults, method)
    of_b: list[str] = []

    # The DM itself held, or the deliveries after the first's.
    passed = 0 if stopped == "before-the-dm" else 1

    async def held_after(results: DiscordResults, job: FinishedJob, *args: object) -> object:
        if job.guild_id == other.guild_id:
            of_b.append(job.job_id)
            if len(of_b) > passed:
                held_there.set()
                await asyncio.Event().wait()  # until the stop
        return await call(results, job, *args)

    with monkeypatch.context() as held:
        held.setattr(DiscordResults, method, held_after)
        async with running_bot(fake, build(settings, lambda d: InstantEngine())):
            if stopped == "after-the-dm":
                await fake.wait_for_channel_message(
                    lambda m: all(job in m.content for job in b_jobs),
                    channel=fake.dm_channel_of(B_MEMBER),
                    timeout=WAIT_S,
                )
            async with asyncio.timeout(WAIT_S):
                await held_there.wait()
    async with running_bot(fake, build(settings, lambda d: InstantEngine())) as bot:
        await all_delivered(bot)
    told = [dm for dm in dms_to(fake, B_MEMBER) if any(job in dm for job in b_jobs)]
    assert len(told) == 1 and all(job in told[0] for job in b_jobs), told


async def test_a_members_jobs_in_two_servers_left_out_are_told_in_one_dm_by_server(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B's member had jobs queued in servers B and C at the stop; the start with only A
    listed ends them all, and one DM names each job by its server."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    fake = fake_discord
    server_b, server_c = fake.add_guild("Server B"), fake.add_guild("Server C")
    for place in (server_b, server_c):
        fake.add_member(B_MEMBER, "b-member", roles=(place.member_role_id,), guild=place.guild_id)
    places = [server_b, server_c, server_b]
    _, jobs = await queued_in_b_at_the_stop(fake, easel_settings_for_test, places)
    settings = serving(easel_settings_for_test, fake.guild_id)
    async with running_bot(fake, build(settings, lambda d: InstantEngine())) as bot:
        await all_delivered(bot)
    [told] = [dm for dm in dms_to(fake, B_MEMBER) if any(job in dm for job in jobs)]
    reason = (
        " were not posted: Easel's operator no longer serves the servers they were made in. "
        "They do not count against your quota."
    )
    assert told.startswith("Your jobs ") and told.endswith(reason), told
    named = told.removeprefix("Your jobs ").removesuffix(reason).split("; ")
    by_server = {
        server: set(re.findall(r"`(\w+)`", listed))
        for listed, server in (place.rsplit(" in ", 1) for place in named)
    }
    assert by_server == {"Server B": {jobs[0], jobs[2]}, "Server C": {jobs[1]}}, told


@pytest.mark.parametrize(
    ("answered", "named"),
    [(True, "Server B"), (False, "a server Easel cannot name right now")],
    ids=["asked", "not-answered"],
)
async def test_a_dm_between_ready_and_its_servers_description_names_the_server(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    answered: bool,
    named: str,
) -> None:
    """Discord's READY lists server B unavailable (discord.py caches a nameless placeholder)
    and B's GUILD_CREATE comes later: a DM about B's jobs sent in between names B as Discord
    answers for it, or (``answered`` False: Discord fails) says its name is not known, never
    an empty name nor "no longer in". B's GUILD_CREATE is held until that DM is sent."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    _, b_jobs = await queued_in_b_at_the_stop(fake, easel_settings_for_test, [other] * 2)
    if not answered:
        fake.fail("GET", "/guilds/{guild}", times=100, status=503)

    dispatch = fake.gateway.dispatch
    ready_dispatched = asyncio.Event()
    told_before_b_described: list[bool] = []

    async def b_described_once_told(event: str, data: dict[str, object]) -> None:
        if event == "GUILD_CREATE" and str(data.get("id")) == str(other.guild_id):
            try:
                await fake.wait_for_channel_message(
                    lambda m: b_jobs[0] in m.content,
                    channel=fake.dm_channel_of(B_MEMBER),
                    timeout=WAIT_S,
                )
                told_before_b_described.append(True)
            except TimeoutError:  # not told: the assertions below say so
                told_before_b_described.append(False)
        await dispatch(event, data)
        if event == "READY":
            ready_dispatched.set()

    monkeypatch.setattr(fake.gateway, "dispatch", b_described_once_told)
    deliver = DiscordResults.deliver

    async def after_ready(results: DiscordResults, job: FinishedJob, *args: object) -> object:
        async with asyncio.timeout(WAIT_S):
            await ready_dispatched.wait()
        return await deliver(results, job, *args)

    monkeypatch.setattr(DiscordResults, "deliver", after_ready)
    settings = serving(easel_settings_for_test, fake.guild_id)
    starting = build(settings, lambda d: InstantEngine())
    async with running_bot(fake, starting, ready_timeout=2 * WAIT_S) as bot:
        await all_delivered(bot)
    assert told_before_b_described == [True]
    [told] = [dm for dm in dms_to(fake, B_MEMBER) if any(job in dm for job in b_jobs)]
    assert told.startswith(f"Your jobs `{b_jobs[0]}`, `{b_jobs[1]}` in {named} were not"), told


async def test_a_listings_dm_that_discord_fails_leaves_its_other_jobs_to_be_named_again(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B's member had three jobs queued at the stop; the start with only A listed ends them,
    and the DM of the first one's delivery, naming all three, gets Discord's 503 (not DMs
    closed): the other two are named by a later delivery's DM, once each. Every other
    delivery waits for the first one's (nothing else posts while its 503 is planned)."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held render is abandoned
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    _, b_jobs = await queued_in_b_at_the_stop(fake, easel_settings_for_test, [other] * 3)
    post_message = ("POST", "/channels/{channel}/messages")

    first: list[str] = []
    first_delivered = asyncio.Event()
    deliver, tell_maker = DiscordResults.deliver, DiscordResults._tell_maker

    async def first_alone(results: DiscordResults, job: FinishedJob, *args: object) -> object:
        if job.guild_id == other.guild_id and not first:
            first.append(job.job_id)
            try:
                return await deliver(results, job, *args)
            finally:
                first_delivered.set()
        async with asyncio.timeout(WAIT_S):
            await first_delivered.wait()
        return await deliver(results, job, *args)

    async def first_dm_fails(results: DiscordResults, job: FinishedJob, notice: str) -> None:
        if job.job_id == first[0]:
            fake.fail(*post_message, status=503)
        await tell_maker(results, job, notice)

    monkeypatch.setattr(DiscordResults, "deliver", first_alone)
    monkeypatch.setattr(DiscordResults, "_tell_maker", first_dm_fails)
    settings = serving(easel_settings_for_test, fake.guild_id)
    async with running_bot(fake, build(settings, lambda d: InstantEngine())) as bot:
        await all_delivered(bot)
    dm_channel = fake.dm_channel_of(B_MEMBER)
    [failed] = [call for call in fake.calls_to(*post_message) if call.status == 503]
    assert failed.path.endswith(f"/channels/{dm_channel}/messages"), failed
    told = [dm for dm in dms_to(fake, B_MEMBER) if any(job in dm for job in b_jobs)]
    others = [job for job in b_jobs if job != first[0]]
    assert [sum(job in dm for dm in told) for job in others] == [1, 1], told


@pytest.mark.parametrize("unavailable", [False, True], ids=["joined", "joined-unavailable"])
async def test_a_server_that_adds_easel_while_it_runs_is_left(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
    unavailable: bool,
) -> None:
    """``unavailable``: Discord reports the server unavailable as it joins (that GUILD_CREATE
    says only so, and discord.py announces no join): it is left once available. An outage's
    end in a server left out that Easel was in at READY is no join: refused, not left."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake, build(serving(easel_settings_for_test, fake.guild_id))) as bot:
        await fake.guild_outage(guild=other.guild_id)
        uninvited = await fake.add_bot("Uninvited", unavailable=unavailable)
        if unavailable:
            await fake.guild_available(guild=uninvited.guild_id)
        warned = await logged(caplog, lambda message: str(uninvited.guild_id) in message)
        assert "not in EASEL_ALLOWED_SERVERS: leaving it" in warned, warned
        async with asyncio.timeout(WAIT_S):
            while bot.get_guild(uninvited.guild_id) is not None:  # noqa: ASYNC110 (the cache's)
                await asyncio.sleep(0.05)
        [leave] = fake.calls_to(*LEAVE)
        assert (leave.path.rsplit("/", 1)[1], leave.status) == (str(uninvited.guild_id), 204)
        assert bot.get_guild(fake.guild_id) is not None
        assert bot.get_guild(other.guild_id) is not None


async def test_the_servers_left_out_are_named_once_a_process_not_at_each_new_session(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway session Discord does not resume (a new IDENTIFY, a new READY) finds the same
    server left out and the same listed id Easel is not in: each is named once."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    caplog.set_level(logging.WARNING, logger="cogs.servers")
    settings = serving(easel_settings_for_test, fake.guild_id, NOT_JOINED)
    async with running_bot(fake, build(settings)) as bot:
        await logged(caplog, lambda message: str(other.guild_id) in message)
        new_session = asyncio.Event()

        async def after_the_cogs() -> None:  # added after them: its task runs after theirs
            new_session.set()

        bot.add_listener(after_the_cogs, "on_ready")
        await fake.drop_gateway_connection(resumable=False)
        await fake.wait_until_identified(times=2)
        async with asyncio.timeout(WAIT_S):
            await new_session.wait()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warnings if str(other.guild_id) in m]) == 1, warnings
    assert len([m for m in warnings if str(NOT_JOINED) in m]) == 1, warnings


@pytest.mark.parametrize(
    ("public", "listed", "warned"),
    [(True, False, True), (False, False, False), (True, True, False)],
    ids=["public-unlisted", "private", "public-listed"],
)
async def test_a_public_application_with_no_server_list_is_named_at_the_start(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
    public: bool,
    listed: bool,
    warned: bool,
) -> None:
    fake_discord.set_bot_public(public)
    settings = easel_settings_for_test
    if listed:
        settings = serving(settings, fake_discord.guild_id)
    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake_discord, build(settings)):
        pass
    warnings = [r.getMessage() for r in caplog.records if PUBLIC in r.getMessage()]
    if warned:
        assert len(warnings) == 1, warnings
        assert "turn off Public Bot" in warnings[0] and "EASEL_ALLOWED_SERVERS" in warnings[0]
    else:
        assert warnings == []
