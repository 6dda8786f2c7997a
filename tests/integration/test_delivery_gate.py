"""The delivery gate: what Easel posts meets the server's rules of when it is delivered, not of
when it was submitted. A job queued or rendering while a moderator deletes the picture it was
made from, bans a word, spoilers or age-restricts the server's pictures, or takes its channel off
Easel's list, is posted as the rules of now say (its maker told privately why not, and whether it
still counts against their quota: a rule changed since is refunded, a deletion is not), also
after a restart; a queued job those rules would withhold ends before it renders, refunded.
Real SQLite, the real queue, policy and ``DiscordResults``; a recording Discord client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import discord
import pytest

from bot.history import History
from bot.images import DEFAULT_FILESIZE_LIMIT
from bot.jobs import accounting
from bot.jobs.queue import JobQueue, Submission
from bot.policy import delivery
from bot.policy.delivery import CHANNEL_OFF, NOT_CHECKED, PROGRESS_DELETED
from bot.policy.guild import GuildList, GuildPolicy, NsfwPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.moderation import (
    WITHHELD_BECAUSE,
    WITHHELD_IN_DIRECT_MESSAGES,
    WITHHELD_PICTURE,
)
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota import DEFAULT_LIMITS, Period, period_start
from bot.services import Services
from bot.user_errors import Reason, UserError
from cogs.history import render_page
from cogs.results.buttons import check_still_shown
from cogs.results.posting import DiscordResults
from db import jobs as journal
from db import quotas as ledger
from db.database import connect
from db.history import withdraw_deleted_results, withdraw_job
from db.jobs import record_job_message
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.integration.test_withdrawn_results import (
    CHANNEL,
    GUILD,
    MEMBER,
    MODERATOR,
    NOW,
    OTHER_CHANNEL,
    delivered,
)
from tests.support.engines import HeldEngine, InstantEngine

SOURCE, SOURCE_POST = "a" * 16, 900
ANOTHER_MEMBER = 70  # neither the member nor the moderator
REFUNDED = "It does not count against your quota."
CHARGED = "It counts against your quota."


class Sent:
    """A channel or direct message channel: records what is sent there."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[discord.File]]] = []

    async def send(self, content: str, **kwargs: Any) -> object:
        self.messages.append((content, list(kwargs.get("files") or [])))
        return SimpleNamespace(id=1000 + len(self.messages))


class FakeDiscord:
    """What ``DiscordResults`` asks of the client: the channel (not age-restricted unless
    ``age_restricted``), the server's name, and the maker's direct messages."""

    def __init__(self, *, age_restricted: bool = False) -> None:
        self.channel, self.direct = Sent(), Sent()
        cached = SimpleNamespace(is_nsfw=lambda: age_restricted)
        self.guild = SimpleNamespace(
            name="Guild",
            unavailable=False,
            get_channel_or_thread=lambda _id: cached,
            filesize_limit=DEFAULT_FILESIZE_LIMIT,  # an unboosted server's
        )

    def get_partial_messageable(self, channel_id: int) -> Sent:
        assert channel_id == CHANNEL
        return self.channel

    def get_guild(self, guild_id: int) -> object:
        return self.guild if guild_id == GUILD else None

    async def create_dm(self, user: discord.abc.Snowflake) -> Sent:
        assert user.id == MEMBER
        return self.direct


def results_for(
    conn: aiosqlite.Connection, fake: FakeDiscord, unnamed_model: Callable[[], str] | None = None
) -> DiscordResults:
    """``unnamed_model``: the engine's pick for a request naming no model, as the composition
    root lists it where renders run here (None: not known, as on a broker)."""
    results = DiscordResults(cast(discord.Client, fake))
    planner = PromptPlanner(wildcards_dir=None, unnamed_model=unnamed_model)
    results.guild_policy = GuildPolicy(conn, prompts=planner)
    return results


def submission(
    kind: str = "imagine", prompt: str = "a dog", parent: str | None = None
) -> Submission:
    request = RenderRequest(prompt, seed=1, steps=2)
    return Submission(kind, request, MEMBER, GUILD, channel_id=CHANNEL, parent_job_id=parent)


async def all_delivered(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> None:
    """Wait until each job is recorded delivered (posted, or withheld: never retried)."""
    async with asyncio.timeout(20):
        while True:
            jobs = [await journal.get_job(conn, job_id) for job_id in job_ids]
            if all(job is not None and job.delivered_at is not None for job in jobs):
                return
            await asyncio.sleep(0.02)


async def started(
    conn: aiosqlite.Connection, engine: InstantEngine, images: Path, results: DiscordResults
) -> JobQueue:
    """The queue wired to ``results`` as the composition root wires it."""
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], images)
    queue.set_sink(results)
    queue.set_start_gate(results)
    results.refund_withheld = queue.refund_withheld
    results.history = History(conn, images, images, MemberSettings(conn))
    results.history.stop_withdrawn = queue.stop_withdrawn
    await queue.start()
    return queue


@pytest.mark.parametrize("source_maker", [MEMBER, ANOTHER_MEMBER])
async def test_jobs_made_from_a_picture_withdrawn_while_they_wait_or_render_are_posted_nowhere(
    conn: aiosqlite.Connection, tmp_path: Path, source_maker: int
) -> None:
    """One still queued ends unrendered, refunded. One rendered stays charged where its
    maker's own picture was removed; where another member's was, its maker (who clicked Vary
    or Upscale on it) did nothing wrong and is refunded, as the same deletion a moment before
    its render ended would have stopped it refunded (AUD13 F5)."""
    await delivered(conn, SOURCE, SOURCE_POST)
    await conn.execute("UPDATE jobs SET user_id = ? WHERE id = ?", (source_maker, SOURCE))
    await delivered(conn, "b" * 16, 901, kind="vary", parent=SOURCE)  # posted before: kept
    fake, engine = FakeDiscord(), HeldEngine()
    queue = await started(conn, engine, tmp_path / "images", results_for(conn, fake))
    try:
        made = [await queue.submit(submission(kind, parent=SOURCE)) for kind in ("upscale", "vary")]
        # A moderator deletes the source's result meanwhile.
        withdrawn = await withdraw_deleted_results(conn, GUILD, CHANNEL, [SOURCE_POST], NOW + 1)
        assert set(withdrawn) == {SOURCE, *made}
        engine.released.set()
        await all_delivered(conn, made)
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    assert fake.channel.messages == []
    rendered = {job_id: await status_of(conn, job_id) is journal.JobStatus.DONE for job_id in made}
    assert sum(rendered.values()) == 1
    own = source_maker == MEMBER
    notices = sorted(content for content, _ in fake.direct.messages)
    assert notices == sorted(
        f"Your job `{job_id}` in Guild was not posted: a moderator removed the picture it was "
        f"made from. {CHARGED if rendered[job_id] and own else REFUNDED}"
        for job_id in made
    )
    assert (await spent_today(conn)).images == (1 if own else 0)


async def test_a_job_withdrawn_for_its_own_message_stays_so_when_its_source_goes_later(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A Vary of another member's picture, rendering, its own message deleted; that picture
    removed after: it was withdrawn for its own message, not with the picture it was made
    from, so it stays charged and says so (a delivery retried through an outage, or a restart
    finding both deletions, reads them in that order)."""
    await delivered(conn, SOURCE, SOURCE_POST)
    await conn.execute("UPDATE jobs SET user_id = ? WHERE id = ?", (ANOTHER_MEMBER, SOURCE))
    fake, engine = FakeDiscord(), HeldEngine()
    queue = await started(conn, engine, tmp_path / "images", results_for(conn, fake))
    try:
        job_id = await queue.submit(submission("vary", parent=SOURCE))
        await asyncio.to_thread(engine.started.wait, 10)
        assert await withdraw_job(conn, job_id, NOW + 1) == [job_id]
        removed = await withdraw_deleted_results(conn, GUILD, CHANNEL, [SOURCE_POST], NOW + 2)
        assert removed == [SOURCE]
        engine.released.set()
        await all_delivered(conn, [job_id])
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    assert (await spent_today(conn)).images == 1
    notice = f"Your job `{job_id}` in Guild was not posted: {PROGRESS_DELETED}. {CHARGED}"
    assert fake.direct.messages == [(notice, [])]


async def status_of(conn: aiosqlite.Connection, job_id: str) -> journal.JobStatus:
    job = await journal.get_job(conn, job_id)
    assert job is not None
    return job.status


async def test_a_moderators_deletion_stops_the_jobs_made_from_the_picture_refunded(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    await delivered(conn, SOURCE, SOURCE_POST)
    fake, engine = FakeDiscord(), HeldEngine()
    queue = await started(conn, engine, tmp_path / "images", results_for(conn, fake))
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: NOW + 1)
    history.stop_withdrawn = queue.stop_withdrawn  # as the composition root wires it
    try:
        made = [await queue.submit(submission(kind, parent=SOURCE)) for kind in ("zoom", "pan")]
        assert (await spent_today(conn)).images == 2  # reserved
        await history.withdraw_deleted(GUILD, CHANNEL, [SOURCE_POST])
        engine.released.set()
        await all_delivered(conn, made)
        for job_id in made:
            job = await journal.get_job(conn, job_id)
            assert job is not None and job.status is journal.JobStatus.CANCELLED
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    assert all(files == [] for _, files in fake.channel.messages)


async def spent_today(conn: aiosqlite.Connection) -> ledger.Usage:
    return await ledger.usage(conn, MEMBER, GUILD, period_start(Period.DAY, time.time()))


RuleChange = Callable[[GuildPolicy], Awaitable[None]]


async def _ban_dog(policy: GuildPolicy) -> None:
    await policy.change_list(GUILD, MODERATOR, GuildList.BANNED_WORD, "dog", add=True)


async def _take_the_channel_off(policy: GuildPolicy) -> None:
    await policy.change_list(
        GUILD, MODERATOR, GuildList.ALLOWED_CHANNEL, str(OTHER_CHANNEL), add=True
    )


async def _age_restrict(policy: GuildPolicy) -> None:
    await policy.set_nsfw_policy(GUILD, MODERATOR, NsfwPolicy.AGE_RESTRICTED_ONLY)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_ban_dog, "its prompt uses a word the server has banned since it was submitted"),
        (_take_the_channel_off, "Easel is no longer enabled in the channel it was made in"),
        (
            _age_restrict,
            "its pictures stay in age-restricted channels under the server's rules of now, "
            "and that channel is not one",
        ),
    ],
)
async def test_a_rule_changed_while_the_job_waits_holds_at_delivery(
    conn: aiosqlite.Connection, tmp_path: Path, change: RuleChange, why: str
) -> None:
    fake, job_id = await delivered_after(conn, tmp_path, change)
    assert fake.channel.messages == []
    notice = f"Your job `{job_id}` in Guild was not posted: {why}. {REFUNDED}"
    assert fake.direct.messages == [(notice, [])]
    # Rendered and charged, then given back: its maker did nothing wrong.
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    # Given back, so never shown later (/show, buttons) for free: withdrawn, as Easel's doing
    # (no moderator acted), and said so.
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn))
    stored = await history.job(job_id)
    assert stored is not None and stored.withdrawn and stored.withheld
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    services = cast(Services, SimpleNamespace(guild_policy=policy))
    with pytest.raises(UserError, match=re.escape(WITHHELD_PICTURE)):
        await check_still_shown(services, stored, MEMBER)
    listed = render_page(await history.page(MEMBER, 0, guild_id=GUILD), None)
    # Its maker's own list says why, as they were told by DM (it said only that Easel withheld
    # it); a moderator's list of their jobs names no cause: the reason is the maker's.
    assert f"not posted: {why}; not counted" in listed, listed
    assert "moderator" not in listed
    here = await history.member_jobs_here(GUILD, MEMBER)
    moderated = await history.moderated_page(GUILD, MEMBER, here, here.public_by_channel, 0)
    [line] = moderated.jobs.lines
    assert line.withheld and line.withheld_why is None


async def _spoiler(policy: GuildPolicy) -> None:
    await policy.set_nsfw_policy(GUILD, MODERATOR, NsfwPolicy.SPOILER)


async def test_the_spoiler_policy_of_now_spoilers_a_result_submitted_before_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    fake, job_id = await delivered_after(conn, tmp_path, _spoiler)  # submitted unspoilered
    [(content, files)] = fake.channel.messages
    assert f"job `{job_id}`" in content
    assert [file.spoiler for file in files] == [True]


async def delivered_after(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    change: RuleChange,
    queued: Submission | None = None,
    unnamed_model: Callable[[], str] | None = None,
) -> tuple[FakeDiscord, str]:
    """A job submitted (``queued``, else ``submission()``), the server's rules changed
    (``change``) while it waits, then rendered and delivered; what Discord was sent, and the
    job's id (``unnamed_model``: ``results_for``'s)."""
    fake, engine = FakeDiscord(), HeldEngine()
    results = results_for(conn, fake, unnamed_model)
    policy = results.guild_policy
    assert policy is not None
    queue = await started(conn, engine, tmp_path / "images", results)
    try:
        await policy.settings(GUILD)  # the rules of submit time, kept in memory
        job_id = await queue.submit(queued or submission())
        await asyncio.to_thread(engine.started.wait, 10)  # past the start gate
        await change(policy)
        engine.released.set()
        await all_delivered(conn, [job_id])
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    return fake, job_id


async def test_a_word_banned_while_easel_was_stopped_holds_for_the_restored_job(
    tmp_path: Path,
) -> None:
    database, images = tmp_path / "easel.sqlite3", tmp_path / "images"
    conn = await connect(database)
    try:
        job_id = await JobQueue(conn, [], images).submit(submission(prompt="a small dog"))
        # The ban, then the restart: the journal replays the job, which was admitted before.
        policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
        await _ban_dog(policy)
    finally:
        await conn.close()
    conn = await connect(database)
    fake = FakeDiscord()
    queue = await started(conn, InstantEngine(), images, results_for(conn, fake))
    try:
        await all_delivered(conn, [job_id])
        job = await journal.get_job(conn, job_id)
        assert job is not None and job.status is journal.JobStatus.DONE
    finally:
        await queue.stop()
        await conn.close()
    assert fake.channel.messages == []
    [(notice, _)] = fake.direct.messages
    assert "banned since" in notice and "dog" not in notice and notice.endswith(REFUNDED)


async def test_a_withheld_jobs_refund_stands_once_however_often_it_is_delivered(
    conn: aiosqlite.Connection,
) -> None:
    """A delivery retried at the next start refunds nothing more; a commit after is a no-op."""
    request = RenderRequest("a dog", seed=1, steps=2)
    member = accounting.Member(MEMBER, GUILD)
    now = time.time()
    assert await accounting.admit(conn, "j" * 16, member, request, now, DEFAULT_LIMITS) is None
    await accounting.charge(conn, "j" * 16, 3.0, 1, now)
    assert await spent_today(conn) == ledger.Usage(images=1, gpu_seconds=3.0)
    assert [await accounting.refund_withheld(conn, "j" * 16, now) for _ in range(2)] == [True] * 2
    assert await ledger.commit(conn, "j" * 16, 3.0, now) is None
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    assert await accounting.refund_withheld(conn, "never reserved", now) is False


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_take_the_channel_off, "Easel is no longer enabled in the channel it was made in"),
        (
            _age_restrict,
            "its pictures stay in age-restricted channels under the server's rules of now, "
            "and that channel is not one",
        ),
    ],
)
async def test_a_queued_job_the_rules_of_now_withhold_ends_before_it_renders_refunded(
    conn: aiosqlite.Connection, tmp_path: Path, change: RuleChange, why: str
) -> None:
    images = tmp_path / "images"
    job_id = await JobQueue(conn, [], images).submit(submission())  # journaled while stopped
    await change(GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None)))
    await ends_before_rendering(conn, job_id, images, why)


async def _allow_only_the_safe_model(policy: GuildPolicy) -> None:
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_MODEL, "safe-model", add=True)


def _rendering_with(model: str = "safe-model", count: int = 1, **options: Any) -> Submission:
    request = RenderRequest("a dog", seed=1, steps=2, count=count, model=model, options=options)
    return Submission("imagine", request, MEMBER, GUILD, channel_id=CHANNEL)


MODEL_LEFT_OUT = (
    "its model `nsfw-model` is no longer on the server's list of allowed models (an admin "
    "changed the list since it was submitted)"
)


async def test_a_model_the_server_leaves_out_while_the_job_renders_holds_at_delivery(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queued = _rendering_with("nsfw-model")
    fake, job_id = await delivered_after(conn, tmp_path, _allow_only_the_safe_model, queued)
    assert fake.channel.messages == []
    notice = f"Your job `{job_id}` in Guild was not posted: {MODEL_LEFT_OUT}. {REFUNDED}"
    assert fake.direct.messages == [(notice, [])]
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)


async def test_a_job_naming_no_model_is_held_by_the_model_it_rendered_with(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Admitted while the server had no model list and no default, a job names no model and
    the engine renders its first installed (``instant`` here); a list made since leaves that
    one out: held at delivery by the model its pictures name (review R_AUD1: the None was
    skipped and the result posted)."""
    request = RenderRequest("a dog", seed=1, steps=2, count=1, model=None)
    queued = Submission("imagine", request, MEMBER, GUILD, channel_id=CHANNEL)
    fake, job_id = await delivered_after(conn, tmp_path, _allow_only_the_safe_model, queued)
    assert fake.channel.messages == []
    left_out = MODEL_LEFT_OUT.replace("nsfw-model", "instant")
    notice = f"Your job `{job_id}` in Guild was not posted: {left_out}. {REFUNDED}"
    assert fake.direct.messages == [(notice, [])]


def _pass_naming_no_model(mode: str, **options: Any) -> Submission:
    """A pass over a picture made with no model named: it renders with the engine's pick."""
    request = RenderRequest(
        "a dog", seed=1, steps=2, mode=mode, init_image="picture.png", options=options
    )
    return Submission(mode, request, MEMBER, GUILD, channel_id=CHANNEL)


@pytest.mark.parametrize(
    "queued",
    [
        Submission("imagine", RenderRequest("a dog", seed=1, steps=2), MEMBER, GUILD, CHANNEL),
        _pass_naming_no_model("upscale", upscale_mode="creative"),
        _pass_naming_no_model("faces", fix_faces=True),
    ],
    ids=["imagine", "creative upscale", "fix faces"],
)
async def test_a_queued_job_naming_no_model_ends_unrendered_once_the_list_leaves_out_the_pick(
    conn: aiosqlite.Connection, tmp_path: Path, queued: Submission
) -> None:
    """Admitted while the server had no model list and no default, a job (a pass over a picture
    too: its picture's infotext does not name the model it renders with) renders with the
    engine's pick here; a list made since that leaves it out ends the job before it renders,
    not after (the GPU time spent, withheld at delivery, or for a pass not at all)."""
    images = tmp_path / "images"
    job_id = await JobQueue(conn, [], images).submit(queued)  # journaled while stopped
    await _allow_only_the_safe_model(GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None)))
    await ends_before_rendering(
        conn, job_id, images, MODEL_LEFT_OUT, unnamed_model=lambda: "nsfw-model"
    )


@pytest.mark.parametrize(
    "queued",
    [
        _pass_naming_no_model("upscale", upscale_mode="fast"),
        _pass_naming_no_model("faces", face_restore=True),
    ],
    ids=["fast upscale", "faces restored only"],
)
async def test_a_pass_that_renders_no_model_is_not_held_by_the_model_list(
    conn: aiosqlite.Connection, tmp_path: Path, queued: Submission
) -> None:
    images = tmp_path / "images"
    job_id = await JobQueue(conn, [], images).submit(queued)
    await _allow_only_the_safe_model(GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None)))
    fake, engine = FakeDiscord(), InstantEngine()
    queue = await started(conn, engine, images, results_for(conn, fake, lambda: "nsfw-model"))
    try:
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    assert len(engine.batches) == 1
    [(_, files)] = fake.channel.messages
    assert len(files) == 1


@pytest.mark.parametrize(
    ("queued", "unnamed_model", "rendered_with"),
    [
        (_pass_naming_no_model("upscale", upscale_mode="creative"), None, "instant"),
        (_pass_naming_no_model("faces", fix_faces=True), lambda: "nsfw-model", "nsfw-model"),
    ],
    ids=["creative upscale on a broker", "fix faces"],
)
async def test_a_pass_naming_no_model_is_held_at_delivery_by_the_model_it_rendered_with(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    queued: Submission,
    unnamed_model: Callable[[], str] | None,
    rendered_with: str,
) -> None:
    """A list made while the pass renders leaves out the model it renders with: a creative
    upscale's pictures name it (the pass's own, ``base_params``; where no pick is known here,
    as on a broker, only they can tell: review R_L2, it was posted); a faces fix's keep their
    picture's (``instant`` here), so it is held by the pick it started with."""
    fake, job_id = await delivered_after(
        conn, tmp_path, _allow_only_the_safe_model, queued, unnamed_model
    )
    assert fake.channel.messages == []
    left_out = MODEL_LEFT_OUT.replace("nsfw-model", rendered_with)
    notice = f"Your job `{job_id}` in Guild was not posted: {left_out}. {REFUNDED}"
    assert fake.direct.messages == [(notice, [])]


@pytest.mark.parametrize(
    "queued",
    [
        _pass_naming_no_model("upscale", upscale_mode="creative"),
        _pass_naming_no_model("faces", fix_faces=True),
    ],
    ids=["creative upscale", "fix faces"],
)
async def test_a_pass_naming_no_model_is_judged_by_the_model_it_rendered_not_a_later_pick(
    conn: aiosqlite.Connection, tmp_path: Path, queued: Submission
) -> None:
    """A pass naming no model starts with the engine's pick here, ``instant`` (the test
    engine's pictures name it). While it renders the server lists that model alone and one
    sorting first, ``aaa``, is installed, the engine's pick from then on: the model it
    rendered with is allowed, so it is posted (review R_L2: judged by the pick of delivery
    time, withheld, its maker told of ``aaa``)."""
    pick = ["instant"]

    async def list_it_and_install_another(policy: GuildPolicy) -> None:
        await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_MODEL, "instant", add=True)
        pick[0] = "aaa"

    fake, job_id = await delivered_after(
        conn, tmp_path, list_it_and_install_another, queued, lambda: pick[0]
    )
    assert fake.direct.messages == []
    [(content, files)] = fake.channel.messages
    assert job_id in content and len(files) == 1


@pytest.mark.parametrize(
    "queued",
    [
        _rendering_with("nsfw-model"),
        _rendering_with(refiner="nsfw-model"),  # a refiner is a model: the list governs it
        _rendering_with(
            count=2,
            compare={
                "cells": [{"model": "safe-model"}, {"model": "nsfw-model"}],
                "x": {"title": "Checkpoint name", "labels": ["safe-model", "nsfw-model"]},
            },
        ),
    ],
    ids=["model", "refiner", "compare cell"],
)
async def test_a_queued_job_whose_model_the_server_left_out_since_ends_before_it_renders(
    conn: aiosqlite.Connection, tmp_path: Path, queued: Submission
) -> None:
    images = tmp_path / "images"
    job_id = await JobQueue(conn, [], images).submit(queued)  # journaled while stopped
    await _allow_only_the_safe_model(GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None)))
    await ends_before_rendering(conn, job_id, images, MODEL_LEFT_OUT)


async def test_a_job_whose_models_the_server_still_allows_renders(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queued = _rendering_with(refiner="safe-model")
    fake, _ = await delivered_after(conn, tmp_path, _allow_only_the_safe_model, queued)
    [(_, files)] = fake.channel.messages
    assert len(files) == 1


async def ends_before_rendering(
    conn: aiosqlite.Connection,
    job_id: str,
    images: Path,
    why: str,
    unnamed_model: Callable[[], str] | None = None,
) -> None:
    """A queue started over the journal ends ``job_id`` unrendered and refunded, its maker told
    ``why`` (``unnamed_model``: ``results_for``'s)."""
    fake, engine = FakeDiscord(), InstantEngine()
    queue = await started(conn, engine, images, results_for(conn, fake, unnamed_model))
    try:
        await all_delivered(conn, [job_id])
        assert queue.snapshot().running == ()  # its slots freed
    finally:
        await queue.stop()
    assert engine.batches == []  # no GPU time
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.status is journal.JobStatus.CANCELLED
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    assert fake.channel.messages == []
    notice = f"Your job `{job_id}` in Guild was not posted: {why}. {REFUNDED}"
    assert fake.direct.messages == [(notice, [])]


class RecordingWebhook:
    def __init__(self) -> None:
        self.edits: list[object] = []

    async def edit_message(self, message_id: object, **kwargs: Any) -> None:
        self.edits.append(kwargs.get("content"))


async def test_a_job_withdrawn_by_the_deletion_of_its_own_message_says_so_and_edits_nothing(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, engine, webhook = FakeDiscord(), HeldEngine(), RecordingWebhook()
    results = results_for(conn, fake)
    monkeypatch.setattr(results, "_webhook", lambda _job: webhook)
    queue = await started(conn, engine, tmp_path / "images", results)
    try:
        token = {"application_id": 1, "interaction_token": "t", "interaction_created_at": NOW}
        alive = Submission(
            "imagine", RenderRequest("a dog", seed=1, steps=2), MEMBER, GUILD, CHANNEL, **token
        )
        monkeypatch.setattr(results, "_alive", lambda _job_id, _created_at: True)
        job_id = await queue.submit(alive)
        await asyncio.to_thread(engine.started.wait, 10)
        # Its progress message, recorded as posted, deleted in the channel while it renders.
        assert await record_job_message(conn, job_id, 777)
        assert await withdraw_deleted_results(conn, GUILD, CHANNEL, [777], NOW + 1) == [job_id]
        engine.released.set()
        await all_delivered(conn, [job_id])
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    notice = f"Your job `{job_id}` in Guild was not posted: its message in the channel was deleted."
    assert fake.direct.messages == [(f"{notice} {CHARGED}", [])]
    assert webhook.edits == []  # the deleted message is not edited


async def stopped_at(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> str:
    """A job whose result the channel taken off during its render withholds; Easel stops at
    ``step`` (a method of ``DiscordResults``) of its delivery. The job's id."""
    fake, engine = FakeDiscord(), HeldEngine()
    results = results_for(conn, fake)
    policy = results.guild_policy
    assert policy is not None
    stopped_here = asyncio.Event()

    async def crash(*_: object, **__: object) -> None:
        stopped_here.set()
        raise RuntimeError("Easel stops here")

    monkeypatch.setattr(results, step, crash)
    queue = await started(conn, engine, tmp_path / "images", results)
    try:
        await policy.settings(GUILD)
        job_id = await queue.submit(submission())
        await asyncio.to_thread(engine.started.wait, 10)
        await _take_the_channel_off(policy)
        engine.released.set()
        await asyncio.wait_for(stopped_here.wait(), 20)
    finally:
        engine.released.set()  # a failed step must not leave a render held
        await queue.stop()
    return job_id


async def delivered_again(conn: aiosqlite.Connection, tmp_path: Path, job_id: str) -> FakeDiscord:
    """The next start, which delivers ``job_id`` again; what Discord was sent."""
    again = FakeDiscord()
    queue = await started(conn, InstantEngine(), tmp_path / "images", results_for(conn, again))
    try:
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    return again


async def test_a_stop_after_a_withheld_result_is_withdrawn_tells_its_maker_the_same_again(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Easel stops after the refund and the withdrawal, before its maker is told and the
    delivery recorded: the next start tells them the rule and the refund, not a deletion."""
    job_id = await stopped_at(conn, tmp_path, monkeypatch, "_withhold")
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_at is not None and job.delivered_at is None
    again = await delivered_again(conn, tmp_path, job_id)
    notice = f"Your job `{job_id}` in Guild was not posted: {CHANNEL_OFF}. {REFUNDED}"
    assert again.direct.messages == [(notice, [])]
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)


async def test_a_stop_between_the_refund_and_the_withdrawal_never_posts_the_refunded_result(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Easel stops after the refund, before the withdrawal records why; by the next start the
    rule is undone: the result given back is still not posted, and its maker told so."""
    job_id = await stopped_at(conn, tmp_path, monkeypatch, "_withdraw_withheld")
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_at is None and job.delivered_at is None
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    await policy.change_list(
        GUILD, MODERATOR, GuildList.ALLOWED_CHANNEL, str(OTHER_CHANNEL), add=False
    )
    again = await delivered_again(conn, tmp_path, job_id)
    assert again.channel.messages == []  # was posted, free: the rule no longer held
    notice = f"Your job `{job_id}` in Guild was not posted: {WITHHELD_BECAUSE}. {REFUNDED}"
    assert again.direct.messages == [(notice, [])]
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_at is not None and job.withheld_why is not None
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)


async def test_a_deletion_between_the_gate_and_the_withdrawal_leaves_the_refund_told(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refunded, then a moderator's deletion withdraws the job before Easel does (no sentence
    kept), then Easel stops: the next start tells its maker it does not count."""
    job_id = await stopped_at(conn, tmp_path, monkeypatch, "_withdraw_withheld")
    await History(conn, tmp_path, tmp_path, MemberSettings(conn)).withdraw_job(job_id, None)
    again = await delivered_again(conn, tmp_path, job_id)
    assert again.channel.messages == []
    [(notice, _)] = again.direct.messages
    assert notice.endswith(REFUNDED)  # was CHARGED: "its message ... was deleted"
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)


@pytest.mark.parametrize("guild_id", [GUILD, None], ids=["server", "direct-messages"])
async def test_a_result_withheld_while_every_reader_stays_busy_is_shown_to_no_one_free(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    guild_id: int | None,
) -> None:
    """Withheld and refunded, so withdrawn as every refund is: once the readers are free, its
    maker's /show or U1-U4/V1-V4 would otherwise give them pictures that did not count (it
    stayed showable, AUD13 F3); an admin's restore brings it back. In direct messages too,
    where the operator's banned words are read (only Easel withdraws a job there)."""
    monkeypatch.setattr(delivery, "BUSY_TRIES", 2)
    monkeypatch.setattr(delivery, "BUSY_PAUSE_S", 0.0)

    async def busy(*_: object, **__: object) -> None:
        raise UserError("Every reader is busy.", Reason.BUSY)

    fake = FakeDiscord()
    results = results_for(conn, fake)
    results.guild_policy = GuildPolicy(
        conn, allow_dms=True, prompts=PromptPlanner(wildcards_dir=None)
    )
    monkeypatch.setattr(results.guild_policy, "check_reuse", busy)
    queue = await started(conn, InstantEngine(), tmp_path / "images", results)
    try:
        request = RenderRequest("a dog", seed=1, steps=2)
        channel_id = None if guild_id is None else CHANNEL
        job_id = await queue.submit(
            Submission("imagine", request, MEMBER, guild_id, channel_id=channel_id)
        )
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    where = "direct messages" if guild_id is None else "Guild"
    notice = f"Your job `{job_id}` in {where} was not posted: {NOT_CHECKED}. {REFUNDED}"
    assert (fake.channel.messages, fake.direct.messages) == ([], [(notice, [])])
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    # The readers free now (a policy of its own): the words would pass, yet it is not shown.
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn))
    stored = await history.job(job_id)
    assert stored is not None and stored.withdrawn and stored.withheld
    policy = GuildPolicy(conn, allow_dms=True, prompts=PromptPlanner(wildcards_dir=None))
    services = cast(Services, SimpleNamespace(guild_policy=policy))
    # In direct messages no server admin can restore it (``WITHHELD_IN_DIRECT_MESSAGES``).
    withheld = WITHHELD_PICTURE if guild_id is not None else WITHHELD_IN_DIRECT_MESSAGES
    with pytest.raises(UserError, match=re.escape(withheld)):
        await check_still_shown(services, stored, MEMBER)
    # /history names the cause its maker was told.
    listed = render_page(await history.page(MEMBER, 0, guild_id=guild_id), None)
    assert f"not posted: {NOT_CHECKED}; not counted" in listed, listed
