"""Pictures that outlive their moderation: a result deleted in Discord withdraws its job (only
in the job's own server and channel), a maker's own deletion withdraws nothing, and a stored
picture is reused only under the server's rules of now. Real SQLite, the real policy."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import discord
import pytest

from bot.history import WITHDRAWAL_AUDITED_AS, WITHHELD_AUDITED_AS, History, StoredJob
from bot.jobs.queue import FinishedJob, ResultImage
from bot.policy import guild as guild_policy
from bot.policy import moderation, prompt_safety
from bot.policy.delivery import WORD_BANNED_SINCE, Withheld, under_rules_of_now
from bot.policy.guild import GuildList, GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.moderation import (
    BANNED_SINCE,
    STORED_TOO_LONG,
    WITHDRAWN_PICTURE,
    ConditioningTexts,
)
from bot.policy.prompt_safety import STILL_PLANNING, PromptPlanner
from bot.services import Services
from bot.user_errors import UserError
from cogs.results.buttons import DeleteButton, check_still_shown, visible_job
from db import guild_settings
from db import history as store
from db import jobs as journal
from db.history import count_rows_of_user, prune_jobs
from inference.face_options import FIX_FACES_PROMPT
from inference.infotext import format_infotext
from inference.prompts import expand_prompt
from inference.prompts.stopping import PlanStopped, checkpoint
from inference.types import RenderRequest
from tests.support import polling
from tests.support.discord_clock import SNOWFLAKE_CLOCK

NOW = 1_800_000_000.0
MEMBER, MODERATOR, GUILD, CHANNEL = 7, 8, 5, 50
EASEL = 1  # Easel's own user, the author of its posts
OTHER_GUILD, OTHER_CHANNEL = 6, 60


async def delivered(
    conn: aiosqlite.Connection,
    job_id: str,
    message_id: int,
    *,
    typed: str = "a dog",
    rendered: str = "a dog",
    negative: str = "",
    guild: int = GUILD,
    channel: int = CHANNEL,
    kind: str = "imagine",
    parent: str | None = None,
    options: dict[str, object] | None = None,
    private: bool = False,
) -> None:
    """A finished job whose result was posted as ``message_id`` (linked to it as the sink
    does, then the delivery recorded as the queue does)."""
    request = RenderRequest(typed, negative_prompt=negative, seed=1, steps=2, options=options or {})
    job = journal.NewJob(
        job_id,
        kind,
        MEMBER,
        guild,
        channel,
        request.to_json(),
        NOW,
        parent_job_id=parent,
        private=private,
    )
    await journal.insert_job(conn, job)
    infotext = format_infotext(rendered, negative, {"Steps": 2, "Sampler": "Euler", "Seed": 1})
    picture = journal.ImageRecord(job_id, 0, 1, f"/images/{job_id}.png", infotext, 64, 64)
    await journal.mark_done(conn, job_id, [picture], 0.1, NOW)
    await journal.record_job_message(conn, job_id, message_id)
    await journal.mark_delivered(conn, job_id, NOW)


async def stored(history: History, job_id: str) -> StoredJob:
    job = await history.job(job_id)
    assert job is not None
    return job


@pytest.fixture
def history(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    return History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: NOW)


@pytest.fixture
def policy(conn: aiosqlite.Connection) -> GuildPolicy:
    return GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))


async def test_a_deleted_result_withdraws_its_job_in_its_own_server_and_channel_only(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    await delivered(conn, "c" * 16, 300, guild=OTHER_GUILD, channel=OTHER_CHANNEL)

    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [100]) == []  # another channel
    assert await history.withdraw_deleted(OTHER_GUILD, CHANNEL, [100]) == []  # another server
    assert await history.withdraw_deleted(GUILD, CHANNEL, [999]) == []  # a "thinking" notice
    assert await history.withdraw_deleted(GUILD, CHANNEL, [999, 100, 300]) == ["a" * 16]
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == []  # once

    withdrawn, kept = await stored(history, "a" * 16), await stored(history, "b" * 16)
    assert withdrawn.withdrawn and not kept.withdrawn
    with pytest.raises(UserError, match=re.escape(WITHDRAWN_PICTURE)):
        await policy.check_reuse(
            GUILD, withdrawn.job_id, withdrawn.texts, withdrawn=withdrawn.withdrawn
        )
    await policy.check_reuse(GUILD, kept.job_id, kept.texts, withdrawn=kept.withdrawn)
    page = await history.page(MEMBER, 0, guild_id=GUILD)
    assert {line.job_id: line.withdrawn for line in page.lines} == {"a" * 16: True, "b" * 16: False}


async def test_the_makers_own_delete_withdraws_nothing_a_moderators_does(
    conn: aiosqlite.Connection, history: History
) -> None:
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    await history.deleted_by_its_maker("a" * 16, 100)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == []
    assert await history.withdraw_deleted(GUILD, CHANNEL, [200]) == ["b" * 16]
    assert [(await stored(history, j)).withdrawn for j in ("a" * 16, "b" * 16)] == [False, True]


async def test_every_post_of_a_job_in_its_server_withdraws_it_where_it_was_posted(
    conn: aiosqlite.Connection, history: History
) -> None:
    """/show and U1-U4 post a job's pictures again, in any channel of its server: deleting
    any of those posts there withdraws it; the maker deleting one post unlinks that one only."""
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    a, b = await stored(history, "a" * 16), await stored(history, "b" * 16)
    await history.posted_again(a, OTHER_CHANNEL, 101)  # /show in another channel
    await history.posted_again(a, CHANNEL, 102)  # U1
    await history.posted_again(b, OTHER_CHANNEL, 201)
    await history.deleted_by_its_maker("a" * 16, 102)  # the maker's own Delete on U1
    assert await history.withdraw_deleted(GUILD, CHANNEL, [102, 101]) == []  # 101 is not here
    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [201]) == ["b" * 16]
    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [101]) == ["a" * 16]


async def test_a_deleted_progress_message_withdraws_its_job_in_one_transaction(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit finding a job's progress message deleted: its post unlinked and the job
    withdrawn by its id commit together. A failure in the second part (a crash) leaves the
    post linked and the job shown, for the next look to withdraw it whole."""
    await delivered(conn, "a" * 16, 100)
    withdraw = store._withdraw_with_made_from
    calls = 0

    async def second_fails(*args: Any, **kwargs: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return await withdraw(*args, **kwargs)

    monkeypatch.setattr(store, "_withdraw_with_made_from", second_fails)
    with pytest.raises(sqlite3.OperationalError):
        await history.withdraw_job("a" * 16, (GUILD, CHANNEL, 100))
    assert calls == 2
    assert not (await stored(history, "a" * 16)).withdrawn
    assert await journal.first_posts_in(conn, "a" * 16, CHANNEL, **SNOWFLAKE_CLOCK) == (100,)
    monkeypatch.setattr(store, "_withdraw_with_made_from", withdraw)
    assert await history.withdraw_job("a" * 16, (GUILD, CHANNEL, 100)) == ["a" * 16]
    assert (await stored(history, "a" * 16)).withdrawn
    assert await journal.first_posts_in(conn, "a" * 16, CHANNEL, **SNOWFLAKE_CLOCK) == ()


async def test_a_post_of_a_job_forgotten_meanwhile_is_not_recorded(
    conn: aiosqlite.Connection, history: History
) -> None:
    """/show or U1 racing its maker's /forget-me: nothing to link, no internal error, and the
    caller is told to delete its post (nothing else would)."""
    await delivered(conn, "a" * 16, 100)
    job = await stored(history, "a" * 16)
    assert await history.posted_again(job, OTHER_CHANNEL, 102)
    await history.forget(MEMBER)
    assert not await history.posted_again(job, OTHER_CHANNEL, 101)
    async with conn.execute("SELECT COUNT(*) FROM job_messages") as cursor:
        assert tuple(await cursor.fetchone() or ()) == (0,)


async def click_delete(
    history: History,
    job_id: str,
    message_id: int,
    clicker: int,
    *,
    discord_deletes: bool = True,
    before_the_answer: Callable[[], Awaitable[object]] | None = None,
    ephemeral: bool = False,
    manage_messages: bool = True,
    author: int = EASEL,
    files: Sequence[str] = (),
    not_found: int | None = None,
    in_direct_messages: bool = False,
) -> bool:
    """``clicker`` (with Manage Messages unless told not) clicks Delete under ``message_id``
    (``ephemeral``: seen by them alone; written by ``author``, carrying ``files``; in the
    server's channel unless ``in_direct_messages``); Discord
    deletes it (and ``before_the_answer`` runs before Easel reads that answer), or answers
    503, or 404 with the code ``not_found`` (10008: Unknown Message). Whether Easel asked
    Discord to delete it."""
    asked = asyncio.Event()
    deferred = asyncio.Event()

    async def defer() -> None:
        deferred.set()

    async def delete_original_response() -> None:
        asked.set()
        if before_the_answer is not None:
            await before_the_answer()
        if not discord_deletes:
            raise discord.HTTPException(cast(Any, SimpleNamespace(status=503, reason="")), "down")
        if not_found is not None:
            gone = cast(Any, SimpleNamespace(status=404, reason="Not Found"))
            raise discord.NotFound(gone, {"code": not_found, "message": "Unknown"})

    clicked = SimpleNamespace(
        guild_id=None if in_direct_messages else GUILD,
        channel_id=CHANNEL,
        user=SimpleNamespace(id=clicker),
        permissions=discord.Permissions(manage_messages=manage_messages),
        message=SimpleNamespace(
            id=message_id,
            flags=discord.MessageFlags(ephemeral=ephemeral),
            author=SimpleNamespace(id=author),
            attachments=[SimpleNamespace(filename=name) for name in files],
        ),
        client=SimpleNamespace(
            services=SimpleNamespace(history=history), user=SimpleNamespace(id=EASEL)
        ),
        response=SimpleNamespace(defer=defer, is_done=deferred.is_set),
        delete_original_response=delete_original_response,
    )
    await DeleteButton(job_id).run(cast(Any, clicked))
    return asked.is_set()


async def test_the_makers_delete_that_fails_leaves_the_post_withdrawing_the_job(
    conn: aiosqlite.Connection, history: History
) -> None:
    """The maker's Delete unlinks its post first; when Discord does not delete it, it is
    still a post of the job that a moderator's deletion withdraws."""
    await delivered(conn, "a" * 16, 100)
    with pytest.raises(discord.HTTPException):
        await click_delete(history, "a" * 16, 100, MEMBER, discord_deletes=False)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == ["a" * 16]


async def test_a_moderators_delete_withdraws_the_job_once_discord_deleted_its_post(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Refused by Discord, the post is still up: its job is not withdrawn. Deleted, it is,
    whether the deletion's event came first or not: then the event waits for the click's
    answer, which withdraws it as the moderator's (once: the click's time stays)."""
    now = [NOW]
    clock_reads: list[float] = []

    def clock() -> float:
        clock_reads.append(now[0])
        return now[0]

    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=clock)
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    with pytest.raises(discord.HTTPException):
        await click_delete(history, "a" * 16, 100, MODERATOR, discord_deletes=False)
    assert not (await stored(history, "a" * 16)).withdrawn
    assert await click_delete(history, "a" * 16, 100, MODERATOR)
    assert (await stored(history, "a" * 16)).withdrawn
    heard: list[asyncio.Task[list[str]]] = []

    async def its_event_first() -> None:
        read_before = len(clock_reads)
        heard.append(asyncio.create_task(history.withdraw_deleted(GUILD, CHANNEL, [200])))
        await polling.until(lambda: len(clock_reads) > read_before)  # the event's time: NOW
        now[0] = NOW + 5

    assert await click_delete(history, "b" * 16, 200, MODERATOR, before_the_answer=its_event_first)
    assert await heard[0] == []
    record = await journal.get_job(conn, "b" * 16)
    assert record is not None and record.withdrawn_at == NOW + 5
    audited = await guild_settings.audit_log(conn, GUILD, 10)
    assert [(row.user_id, row.setting) for row in audited] == [
        (MODERATOR, WITHDRAWAL_AUDITED_AS),
        (MODERATOR, WITHDRAWAL_AUDITED_AS),
    ]


async def test_delete_deletes_a_post_of_its_job_or_a_message_its_clicker_alone_sees(
    conn: aiosqlite.Connection, history: History
) -> None:
    """Its button under another message (another job's post; any message a future path may
    put it on) deletes nothing, for the job's maker or a moderator: refused privately. A
    private result, seen by its maker alone, is deleted, withdrawing nothing."""
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    for clicker in (MEMBER, MODERATOR):
        with pytest.raises(UserError, match=r"not a post of job `a{16}`"):
            await click_delete(history, "a" * 16, 200, clicker)
    assert await history.is_post_of("b" * 16, GUILD, CHANNEL, 200)
    assert await click_delete(history, "a" * 16, 300, MEMBER, ephemeral=True)
    assert not (await stored(history, "a" * 16)).withdrawn
    assert not (await stored(history, "b" * 16)).withdrawn


async def test_a_private_message_is_deleted_for_its_clicker_whoever_made_the_job(
    conn: aiosqlite.Connection, history: History
) -> None:
    """Another member's U1 asked for privately carries that job's Delete: it deletes the
    message they alone see (no Manage Messages needed), withdrawing nothing."""
    await delivered(conn, "a" * 16, 100)
    viewer = MODERATOR  # without Manage Messages here
    assert await click_delete(history, "a" * 16, 300, viewer, ephemeral=True, manage_messages=False)
    assert not (await stored(history, "a" * 16)).withdrawn


async def test_the_maker_deletes_easels_unrecorded_post_of_its_pictures_withdrawing_nothing(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A /show or U1 post not recorded (from before the records, or a crash between the
    send and the record): Easel wrote it and named its file for the job, so its maker may
    delete it; not a moderator (nothing to withdraw: told Easel has no record of it), nor a
    message carrying another job's pictures or written by a member."""
    await delivered(conn, "a" * 16, 100)
    shown = ["SPOILER_easel-" + "a" * 16 + "-0.png"]
    assert await click_delete(history, "a" * 16, 500, MEMBER, files=shown)
    assert await click_delete(history, "a" * 16, 501, MEMBER, files=["easel-" + "a" * 16 + ".png"])
    assert not (await stored(history, "a" * 16)).withdrawn
    with pytest.raises(UserError, match=r"no record of this post of job `a{16}`.*in Discord"):
        await click_delete(history, "a" * 16, 500, MODERATOR, files=shown)
    refused = r"already deleted, or is not a post of job `a{16}`"
    with pytest.raises(UserError, match=refused):
        await click_delete(history, "a" * 16, 502, MEMBER, files=["easel-" + "b" * 16 + "-0.png"])
    with pytest.raises(UserError, match=refused):
        await click_delete(history, "a" * 16, 503, MEMBER, author=MEMBER, files=shown)


async def test_a_second_delete_click_says_the_post_may_be_deleted_already(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A moderator's second click finds no post of the job left; its maker's finds Easel's
    message (``carries_pictures_of``), which Discord answers is gone: no error, nothing
    withdrawn."""
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    assert await click_delete(history, "a" * 16, 100, MODERATOR)
    with pytest.raises(UserError, match=r"already deleted, or is not a post of job `a{16}`"):
        await click_delete(history, "a" * 16, 100, MODERATOR)
    its_file = ["easel-" + "b" * 16 + ".png"]
    assert await click_delete(history, "b" * 16, 200, MEMBER, files=its_file)
    assert await click_delete(history, "b" * 16, 200, MEMBER, files=its_file, not_found=10008)
    assert not (await stored(history, "b" * 16)).withdrawn


async def test_a_moderators_deletion_racing_the_makers_delete_still_withdraws_the_job(
    conn: aiosqlite.Connection, history: History
) -> None:
    """The maker clicks Delete (its post unlinked) on a post a moderator deleted a moment
    before: Discord answers Unknown Message, and the moderator's deletion withdraws the job
    whether its event arrives after that answer or before it. Another 404 (Unknown Channel)
    is no "already deleted": the clicker is told its channel is gone, the post linked again."""
    for job_id, message_id in (("a" * 16, 100), ("b" * 16, 200), ("c" * 16, 300)):
        await delivered(conn, job_id, message_id)
    assert await click_delete(history, "a" * 16, 100, MEMBER, not_found=10008)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == ["a" * 16]

    async def its_event_first() -> None:
        assert await history.withdraw_deleted(GUILD, CHANNEL, [200]) == []  # unlinked

    assert await click_delete(
        history, "b" * 16, 200, MEMBER, before_the_answer=its_event_first, not_found=10008
    )
    assert (await stored(history, "b" * 16)).withdrawn
    with pytest.raises(UserError, match="channel is gone"):
        await click_delete(history, "c" * 16, 300, MEMBER, not_found=10003)
    assert await history.is_post_of("c" * 16, GUILD, CHANNEL, 300)


async def test_a_delete_discord_answers_with_another_404_tells_the_clicker_what_it_said(
    conn: aiosqlite.Connection, history: History
) -> None:
    """Told what Discord said, and only what the clicker can do: delete it themselves with
    Manage Messages, else ask a moderator; nothing in direct messages, where nobody can."""
    await delivered(conn, "a" * 16, 100)
    told: dict[str, str] = {}
    for who, clicker, manage_messages, in_direct_messages in (
        ("moderator", MODERATOR, True, False),
        ("maker", MEMBER, False, False),
        ("in direct messages", MEMBER, False, True),
    ):
        with pytest.raises(UserError, match=r"did not delete this message.*code 10015") as error:
            await click_delete(
                history,
                "a" * 16,
                100,
                clicker,
                not_found=10015,
                manage_messages=manage_messages,
                in_direct_messages=in_direct_messages,
            )
        told[who] = str(error.value)
    assert told["moderator"].endswith("Delete it in Discord.")
    assert told["maker"].endswith("Ask a moderator to delete it.")
    assert told["in direct messages"].endswith("Nothing was deleted.")
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == ["a" * 16]  # still linked


async def test_a_post_that_cannot_be_linked_again_after_a_failed_delete_is_logged(
    conn: aiosqlite.Connection,
    history: History,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The maker's Delete unlinked its post; Discord refuses, and the link's write fails too:
    the clicker is told Discord's refusal, and the log says the post is unlinked."""
    await delivered(conn, "a" * 16, 100)

    async def write_refused(*_: object) -> bool:
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(history, "posted_again", write_refused)
    with pytest.raises(discord.HTTPException, match="down"):
        await click_delete(history, "a" * 16, 100, MEMBER, discord_deletes=False)
    [unlinked] = [r for r in caplog.records if "could not be linked again" in r.getMessage()]
    assert "a" * 16 in unlinked.getMessage() and unlinked.exc_info is not None


async def test_a_makers_second_click_leaves_the_delete_to_the_first(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A double click: the second's delete could reach Discord first, and the first's 404
    would then link the post again as if a moderator had deleted it. The second asks Discord
    nothing; the post's deletion withdraws nothing."""
    await delivered(conn, "a" * 16, 100)
    its_file = ["easel-" + "a" * 16 + ".png"]
    second_asked: list[bool] = []

    async def second_click() -> None:
        second_asked.append(await click_delete(history, "a" * 16, 100, MEMBER, files=its_file))

    assert await click_delete(
        history, "a" * 16, 100, MEMBER, files=its_file, before_the_answer=second_click
    )
    assert second_asked == [False]
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == []


async def test_upscales_of_a_withdrawn_job_are_withdrawn_with_it(
    conn: aiosqlite.Connection, history: History
) -> None:
    """An upscale is the same picture, larger; a variation is a new picture."""
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200, kind="upscale", parent="a" * 16)
    await delivered(conn, "c" * 16, 300, kind="upscale", parent="b" * 16)
    await delivered(conn, "d" * 16, 400, kind="vary", parent="a" * 16)
    withdrawn = await history.withdraw_deleted(GUILD, CHANNEL, [100])
    assert sorted(withdrawn) == ["a" * 16, "b" * 16, "c" * 16]


async def test_a_jobs_posts_go_with_it(conn: aiosqlite.Connection, history: History) -> None:
    """/forget-me and retention leave no row naming where a member's pictures were posted."""
    await delivered(conn, "a" * 16, 100)
    await history.posted_again(await stored(history, "a" * 16), OTHER_CHANNEL, 101)
    await delivered(conn, "b" * 16, 200)
    assert await count_rows_of_user(conn, MEMBER) > 0
    forgotten = await history.forget(MEMBER)
    # For /forget-me to delete from Discord, by channel.
    posted = [(post.channel_id, post.message_id) for post in forgotten.posts]
    assert posted == [(CHANNEL, 100), (CHANNEL, 200), (OTHER_CHANNEL, 101)]
    await delivered(conn, "c" * 16, 300)
    pruned = await prune_jobs(conn, finished_before=NOW + 1, at_most=10)  # retention
    assert pruned.job_ids == ("c" * 16,)
    async with conn.execute("SELECT COUNT(*) FROM job_messages") as cursor:
        assert tuple(await cursor.fetchone() or ()) == (0,)


async def test_a_word_banned_since_refuses_what_was_typed_or_rendered(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    await delivered(conn, "a" * 16, 100, typed="a __animal__", rendered="a [red|ca\u200bt]")
    await delivered(conn, "b" * 16, 200, typed="a dog", rendered="a dog")
    cat, dog = await stored(history, "a" * 16), await stored(history, "b" * 16)
    for job in (cat, dog):  # nothing banned yet
        await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "Cat", add=True)
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await policy.check_reuse(GUILD, cat.job_id, cat.texts, withdrawn=False)
    await policy.check_reuse(GUILD, dog.job_id, dog.texts, withdrawn=False)
    # Another server's words are not this one's.
    await policy.check_reuse(OTHER_GUILD, cat.job_id, cat.texts, withdrawn=False)


async def test_a_fix_faces_prompts_draw_with_a_word_banned_since_refuses_the_picture(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    """/show and U1-U4 read the stored job: its fix-faces prompt as the faces pass drew it at
    the picture's seed (1: "a cat"), not only as typed."""
    await delivered(conn, "a" * 16, 100, options={FIX_FACES_PROMPT: "a {h|c}at"})
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    job = await stored(history, "a" * 16)
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)


class CountedDraws:
    """``expand_prompt`` as the stored check's redraw of a fix-faces prompt calls it, each call
    recorded (its template and thread); ``heavy``: one that reads on past any budget (30 s at
    most) until its thread is asked to stop, as a heavy prompt's parse does."""

    def __init__(self, *, heavy: bool = False) -> None:
        self.heavy = heavy
        self.templates: list[str] = []
        self.threads: list[str] = []
        self.stopped = threading.Event()

    def __call__(self, template: str, seed: int, *args: Any, **kwargs: Any) -> Any:
        self.templates.append(template)
        self.threads.append(threading.current_thread().name)
        try:
            for _ in range(3000 if self.heavy else 0):
                checkpoint()
                time.sleep(0.01)
        except PlanStopped:
            self.stopped.set()
            raise
        return expand_prompt(template, seed, *args, **kwargs)


def clicked(
    history: History, policy: GuildPolicy, clicker: int, *, channel: int = CHANNEL
) -> discord.Interaction[Any]:
    """A click by ``clicker`` on a result's button in ``channel``, which they may read."""
    services = SimpleNamespace(history=history, guild_policy=policy, thread_members=None)
    return cast(
        Any,
        SimpleNamespace(
            guild_id=GUILD,
            channel_id=channel,
            channel=None,  # a plain text channel: no thread, not age-restricted
            user=SimpleNamespace(id=clicker),
            permissions=discord.Permissions(view_channel=True, read_message_history=True),
            client=SimpleNamespace(services=services),
        ),
    )


async def test_a_stored_fix_faces_prompt_is_drawn_only_for_a_clicker_who_may_see_the_job(
    conn: aiosqlite.Connection,
    history: History,
    policy: GuildPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drawing a stored job's fix-faces prompt again parses it (seconds for a heavy one): a
    member clicking on another member's private job, answered as if it did not exist, costs
    no draw; its maker's click draws it and reads the draw (1: "a cat")."""
    await delivered(conn, "a" * 16, 100, options={FIX_FACES_PROMPT: "a {h|c}at"}, private=True)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    draws = CountedDraws()
    monkeypatch.setattr(moderation, "expand_prompt", draws)
    with pytest.raises(UserError, match="no longer in the history"):
        await visible_job(clicked(history, policy, MEMBER + 1), "a" * 16)
    assert draws.templates == []
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await visible_job(clicked(history, policy, MEMBER), "a" * 16)
    assert draws.templates == ["a {h|c}at"]


async def test_a_stored_fix_faces_prompts_draw_is_a_prompt_readers_within_its_budget(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The draw runs on the prompt planner's own threads (not asyncio's, which uploads,
    thumbnails and the database helpers share), within the stored check's budget: past it
    the picture is refused for now as too long to check (``STORED_TOO_LONG``, no verdict
    kept: the next click reads it again), and the draw stops at its next checkpoint."""
    await delivered(conn, "a" * 16, 100, options={FIX_FACES_PROMPT: "a {h|c}at"})
    planner = CountingPlanner(stored_budget_s=1.0)
    policy = GuildPolicy(conn, prompts=planner)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "horse", add=True)
    draws = CountedDraws(heavy=True)
    monkeypatch.setattr(moderation, "expand_prompt", draws)
    job = await stored(history, "a" * 16)
    for _ in range(2):
        with pytest.raises(UserError, match=re.escape(STORED_TOO_LONG)):
            await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
        assert await asyncio.to_thread(draws.stopped.wait, 30)
        draws.stopped.clear()
    assert planner.stored_checks == 2
    assert len(draws.threads) == 2
    assert all(name.startswith("easel-prompt") for name in draws.threads), draws.threads


async def test_a_delivery_reads_its_fix_faces_prompt_as_each_picture_drew_it(
    conn: aiosqlite.Connection,
) -> None:
    """The delivery gate reads the draw too (1: "a cat"), under the words of now."""
    policy = GuildPolicy(
        conn,
        allow_dms=True,
        prompts=PromptPlanner(wildcards_dir=None),
        operator_banned_words=frozenset({"cat"}),
    )
    infotext = format_infotext("a dog", "", {"Steps": 2, "Sampler": "Euler", "Seed": 1})
    finished = FinishedJob(
        job_id="a" * 16,
        kind="imagine",
        succeeded=True,
        error=None,
        request=RenderRequest("a dog", seed=1, steps=2, options={FIX_FACES_PROMPT: "a {h|c}at"}),
        user_id=MEMBER,
        guild_id=None,  # direct messages: the operator's words, no server's other rules
        channel_id=None,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=(ResultImage(Path("a.png"), 1, infotext),),
    )

    async def not_asked() -> bool:
        raise AssertionError("a job of direct messages asks nothing of a server")

    with pytest.raises(Withheld) as withheld:
        await under_rules_of_now(finished, policy, not_asked, not_asked)
    assert withheld.value.why == WORD_BANNED_SINCE


async def test_a_negative_prompts_extra_network_tag_is_read_as_words_a_prompts_is_not(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    """The engine applies a prompt's ``<lora:cat:1>`` but reads a negative prompt's as text
    ("cat"), as the submit check does: a stored job is read the same way."""
    tag = "<lora:cat:1>"
    await delivered(conn, "a" * 16, 100, typed=f"a dog {tag}", rendered=f"a dog {tag}")
    await delivered(conn, "b" * 16, 200, negative=tag)
    applied, read = await stored(history, "a" * 16), await stored(history, "b" * 16)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    await policy.check_reuse(GUILD, applied.job_id, applied.texts, withdrawn=False)
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await policy.check_reuse(GUILD, read.job_id, read.texts, withdrawn=False)


class CountingPlanner(PromptPlanner):
    """The real planner, counting the stored texts it reads."""

    def __init__(self, stored_budget_s: float = 2.0) -> None:
        super().__init__(wildcards_dir=None, stored_budget_s=stored_budget_s)
        self.stored_checks = 0

    async def check_stored(
        self, texts: ConditioningTexts, banned_words: Collection[str], *, guild_id: int | None
    ) -> None:
        self.stored_checks += 1
        await super().check_stored(texts, banned_words, guild_id=guild_id)


async def test_a_jobs_verdict_is_read_once_until_the_servers_words_change(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A second click on the same job does not read its texts again; a banned word added or
    removed does, and a verdict left unread (too long) is not kept."""
    planner = CountingPlanner()
    policy = GuildPolicy(conn, prompts=planner)
    await delivered(conn, "a" * 16, 100, typed="a cat")
    await delivered(conn, "b" * 16, 200, typed="a dog")
    cat, dog = await stored(history, "a" * 16), await stored(history, "b" * 16)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "horse", add=True)
    for _ in range(2):
        await policy.check_reuse(GUILD, cat.job_id, cat.texts, withdrawn=False)
        await policy.check_reuse(GUILD, dog.job_id, dog.texts, withdrawn=False)
    assert planner.stored_checks == 2
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    for _ in range(2):
        with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
            await policy.check_reuse(GUILD, cat.job_id, cat.texts, withdrawn=False)
    await policy.check_reuse(GUILD, dog.job_id, dog.texts, withdrawn=False)
    assert planner.stored_checks == 4
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=False)
    await policy.check_reuse(GUILD, cat.job_id, cat.texts, withdrawn=False)
    assert planner.stored_checks == 5


async def test_verdicts_are_kept_for_the_jobs_last_asked_about(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guild_policy, "REUSE_VERDICTS_KEPT", 2)
    planner = CountingPlanner()
    policy = GuildPolicy(conn, prompts=planner)
    for message_id, letter in enumerate("abc"):
        await delivered(conn, letter * 16, message_id)
    a, b, c = [await stored(history, letter * 16) for letter in "abc"]
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "horse", add=True)
    for job in (a, b, a, c):  # "a" asked again before "c": "b"'s verdict goes
        await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
    assert planner.stored_checks == 3
    for job in (a, c, b):
        await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
    assert planner.stored_checks == 4


async def test_a_pictures_check_is_no_members_own(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member whose prompt is still being read past its budget is told so for their next
    prompt, not for a picture's check: that read is shared with whoever asks about the job
    meanwhile, so a refusal of the member's own would reach them too."""
    release = threading.Event()

    def slow_plan(*args: object) -> None:
        release.wait(30)

    planner = PromptPlanner(wildcards_dir=None, budget_s=0.2)
    policy = GuildPolicy(conn, prompts=planner)
    await delivered(conn, "a" * 16, 100, typed="a cat")
    job = await stored(history, "a" * 16)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    monkeypatch.setattr(prompt_safety, "plan_request", slow_plan)
    prompt = RenderRequest("a dog", seed=1, steps=2)
    try:
        with pytest.raises(UserError, match="took longer"):
            await planner.check(prompt, [], member_id=MEMBER, guild_id=GUILD)
        with pytest.raises(UserError, match=re.escape(STILL_PLANNING)):
            await planner.check(prompt, [], member_id=MEMBER, guild_id=GUILD)
        with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
            services = cast(Services, SimpleNamespace(guild_policy=policy))
            await check_still_shown(services, job, MEMBER)
    finally:
        release.set()


class GatedPlanner(PromptPlanner):
    """Stored checks that record their start and end only once ``release`` is set."""

    def __init__(self, starts_awaited: int) -> None:
        super().__init__(wildcards_dir=None, stored_budget_s=30.0)
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.all_started = asyncio.Event()
        self._starts_awaited = starts_awaited

    async def check_stored(
        self, texts: ConditioningTexts, banned_words: Collection[str], *, guild_id: int | None
    ) -> None:
        self.started.append(texts.prompts[0])
        if len(self.started) == self._starts_awaited:
            self.all_started.set()
        await self.release.wait()


async def three_jobs_under_a_ban(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> list[StoredJob]:
    """Delivered jobs "a cat", "a dog" and "a bird", in a server that bans a word none uses."""
    for message_id, animal in enumerate(("cat", "dog", "bird")):
        await delivered(
            conn, animal[0] * 16, message_id, typed=f"a {animal}", rendered=f"a {animal}"
        )
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "horse", add=True)
    return [await stored(history, letter * 16) for letter in "cdb"]


async def test_a_members_stored_checks_take_turns_anothers_do_not_wait(
    conn: aiosqlite.Connection, history: History
) -> None:
    """One member clicking on several jobs holds one prompt reader at a time (their second
    check starts once their first ends); another member's check starts meanwhile."""
    planner = GatedPlanner(starts_awaited=2)
    policy = GuildPolicy(conn, prompts=planner)
    cat, dog, bird = await three_jobs_under_a_ban(conn, history, policy)

    def asked(job: StoredJob, member_id: int) -> asyncio.Task[None]:
        return asyncio.create_task(
            policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False, member_id=member_id)
        )

    checks = [asked(cat, MEMBER), asked(dog, MEMBER), asked(bird, MEMBER + 1)]
    async with asyncio.timeout(10):
        await planner.all_started.wait()
        for _ in range(20):  # let the member's second check run as far as it would
            await asyncio.sleep(0)
    assert planner.started == ["a cat", "a bird"]
    planner.release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*checks)
    assert planner.started == ["a cat", "a bird", "a dog"]


class TextGatedPlanner(PromptPlanner):
    """Stored checks that each end once their text's gate opens."""

    def __init__(self, stored_budget_s: float) -> None:
        super().__init__(wildcards_dir=None, stored_budget_s=stored_budget_s)
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    async def check_stored(
        self, texts: ConditioningTexts, banned_words: Collection[str], *, guild_id: int | None
    ) -> None:
        self.started.append(texts.prompts[0])
        await self.gates.setdefault(texts.prompts[0], asyncio.Event()).wait()


async def test_a_kept_verdict_waits_for_no_turn_and_a_turn_shares_the_reads_budget(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A click whose verdict is kept answers while the member's turn is held; a click that
    waited for its turn answers (``STILL_PLANNING``) within one budget, not after its own
    read too, which goes on for the next click."""
    planner = TextGatedPlanner(stored_budget_s=0.5)
    policy = GuildPolicy(conn, prompts=planner)
    cat, dog, bird = await three_jobs_under_a_ban(conn, history, policy)

    def asked(job: StoredJob) -> asyncio.Task[None]:
        return asyncio.create_task(
            policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False, member_id=MEMBER)
        )

    planner.gates["a cat"] = asyncio.Event()
    planner.gates["a cat"].set()
    await asyncio.wait_for(asked(cat), 10)  # kept
    holding, waiting = asked(dog), asked(bird)
    for _ in range(20):  # the dog's read holds the member's turn, the bird's waits for it
        await asyncio.sleep(0)
    assert planner.started == ["a cat", "a dog"]
    kept = asked(cat)
    for _ in range(20):
        await asyncio.sleep(0)
    assert kept.done() and kept.exception() is None
    planner.gates["a dog"].set()  # the bird's turn comes; its read never ends here
    with pytest.raises(UserError, match=re.escape(STILL_PLANNING)):
        await asyncio.wait_for(waiting, 10)
    assert planner.started[-1] == "a bird" and not planner.gates["a bird"].is_set()
    await asyncio.wait_for(holding, 10)
    planner.gates["a bird"].set()
    await asyncio.wait_for(asked(bird), 10)  # the read that went on answers the next click


async def test_a_button_that_submits_the_request_again_leaves_its_prompts_to_the_plan(
    conn: aiosqlite.Connection, history: History
) -> None:
    """V1-V4, 🔄, Upscale...: their admission plans the job's prompt and negative prompt, so
    only what else the pictures were conditioned on (a drawn wildcard) is read before."""
    planner = CountingPlanner()
    policy = GuildPolicy(conn, prompts=planner)
    await delivered(conn, "a" * 16, 100, typed="a cat", rendered="a cat")
    await delivered(conn, "b" * 16, 200, typed="a __animal__", rendered="a cat")
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    typed, drawn = await stored(history, "a" * 16), await stored(history, "b" * 16)
    assert not typed.texts_to_recheck(resubmitted=True)
    await policy.check_reuse(
        GUILD,
        typed.job_id,
        typed.texts_to_recheck(resubmitted=True),
        withdrawn=False,
        prompts_planned=True,
    )
    assert planner.stored_checks == 0
    assert drawn.texts_to_recheck(resubmitted=True) == ConditioningTexts(("a cat",))
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await policy.check_reuse(
            GUILD,
            drawn.job_id,
            drawn.texts_to_recheck(resubmitted=True),
            withdrawn=False,
            prompts_planned=True,
        )
    # Posted again or reused otherwise (U1, /show, a menu): every text is read, whatever
    # was kept of a part of them.
    await delivered(conn, "c" * 16, 300, typed="a {cat|dog}", rendered="a dog")
    varied = await stored(history, "c" * 16)
    rendered_only = varied.texts_to_recheck(resubmitted=True)
    await policy.check_reuse(
        GUILD, varied.job_id, rendered_only, withdrawn=False, prompts_planned=True
    )
    for job in (typed, varied):
        with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
            await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)


async def test_texts_too_long_to_check_now_are_refused_in_their_own_words(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored picture's texts passed when typed: too long to read again within their own
    budget is not the member's prompt to simplify, and is asked again next time."""
    release = threading.Event()

    def slow_check(texts: ConditioningTexts, banned: Collection[str]) -> None:
        release.wait(30)

    planner = CountingPlanner(stored_budget_s=1.0)
    policy = GuildPolicy(conn, prompts=planner)
    await delivered(conn, "a" * 16, 100)
    job = await stored(history, "a" * 16)
    await policy.change_list(GUILD, 1, GuildList.BANNED_WORD, "cat", add=True)
    monkeypatch.setattr(prompt_safety, "check_banned_since", slow_check)
    try:
        with pytest.raises(UserError) as refused:
            await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
    finally:
        release.set()
    assert str(refused.value) == STORED_TOO_LONG
    monkeypatch.undo()
    await policy.check_reuse(GUILD, job.job_id, job.texts, withdrawn=False)
    assert planner.stored_checks == 2


async def test_an_admin_restores_a_withdrawn_job_of_their_server_only(
    conn: aiosqlite.Connection,
    history: History,
    policy: GuildPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [100]) == ["a" * 16]
    refusals = [
        (OTHER_GUILD, "a" * 16, "no job"),  # another server's job is not named
        (GUILD, "f" * 16, "no job"),
        (GUILD, "b" * 16, "was not withdrawn"),
    ]
    for guild, job_id, sentence in refusals:
        with pytest.raises(UserError, match=sentence):
            await history.restore(guild, job_id, admin_id=1)

    async def crashed(*written: object) -> None:
        raise RuntimeError("the bot stopped here")

    with monkeypatch.context() as crashing:  # the audit row and the restore: one transaction
        crashing.setattr(guild_settings, "record_change", crashed)
        with pytest.raises(RuntimeError):
            await history.restore(GUILD, "a" * 16, admin_id=1)
    assert (await stored(history, "a" * 16)).withdrawn
    await history.restore(GUILD, "a" * 16, admin_id=1)
    assert not (await stored(history, "a" * 16)).withdrawn
    [entry] = await policy.audit_log(GUILD)
    restored = f"1 restored: {'a' * 16}"
    assert (entry.user_id, entry.setting, entry.new_value) == (1, "restore", restored)
    assert await policy.audit_log(OTHER_GUILD) == []


async def test_a_restore_brings_back_the_jobs_withdrawn_with_it_not_those_withdrawn_alone(
    conn: aiosqlite.Connection, tmp_path: Path, policy: GuildPolicy
) -> None:
    """A withdrawal takes the upscales and what was being made from a job with it, at one
    moment: restoring the job restores them, said and audited. A job whose own post was
    deleted earlier was a moderator's choice on its own; it stays withdrawn."""
    clock = [NOW]
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: clock[0])
    await delivered(conn, "a" * 16, 100)
    await delivered(conn, "b" * 16, 200, kind="upscale", parent="a" * 16)
    await delivered(conn, "c" * 16, 300, kind="upscale", parent="b" * 16)
    await delivered(conn, "d" * 16, 400, kind="upscale", parent="a" * 16)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [400]) == ["d" * 16]
    clock[0] = NOW + 60
    withdrawn = await history.withdraw_deleted(GUILD, CHANNEL, [100])
    assert sorted(withdrawn) == ["a" * 16, "b" * 16, "c" * 16]
    with pytest.raises(UserError, match="no job"):  # another server's admin restores nothing
        await history.restore(OTHER_GUILD, "a" * 16, admin_id=1)
    restored = await history.restore(GUILD, "a" * 16, admin_id=1)
    assert sorted(restored.with_it) == ["b" * 16, "c" * 16]
    for job_id in ("a" * 16, "b" * 16, "c" * 16):
        assert not (await stored(history, job_id)).withdrawn, job_id
    assert (await stored(history, "d" * 16)).withdrawn
    [entry] = await policy.audit_log(GUILD)
    assert entry.setting == "restore" and entry.new_value is not None
    assert entry.new_value.startswith(f"3 restored: {'a' * 16}") and "b" * 16 in entry.new_value


async def test_a_withdrawals_audit_row_is_written_with_it_whatever_happens_after(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    """The row is written in the withdrawal's transaction, counting the unfinished jobs
    there: a crash before the queue stops them (here: the stop fails) loses neither, and the
    start gate stops them later. A purge's row names its counts first and ten ids."""
    history.easel_id = 99

    async def crashed(job_ids: Sequence[str]) -> list[str]:
        raise RuntimeError("the bot stopped here")

    history.stop_withdrawn = crashed
    request = RenderRequest("a dog", seed=1, steps=2).to_json()
    for n in range(12):
        await delivered(conn, f"{n:016x}", 100 + n)
    made_from = journal.NewJob("e" * 16, "vary", MEMBER, GUILD, CHANNEL, request, NOW, "0" * 16)
    await journal.insert_job(conn, made_from)  # still queued
    with pytest.raises(RuntimeError):
        await history.withdraw_deleted(GUILD, CHANNEL, range(100, 112))
    assert (await stored(history, "e" * 16)).withdrawn
    [entry] = await policy.audit_log(GUILD)
    assert entry.new_value is not None
    counts, ids = entry.new_value.split(": ")
    assert counts == "13 withdrawn, 1 unfinished stopped and refunded"
    assert ids.endswith(" and 3 more") and len(ids.split(", ")) == 10


async def test_a_moderators_withdrawal_is_audited_as_easels_a_withheld_result_apart(
    conn: aiosqlite.Connection, history: History, policy: GuildPolicy
) -> None:
    """Discord does not say who deleted a post: the row is Easel's, naming the jobs withdrawn
    and how many of them were stopped (as the queue says). Easel's own withholding at
    delivery is no moderator's doing: its row has its own name, and the job's id, for an
    admin to restore; a deletion that matches no job writes nothing."""
    easel = 99
    history.easel_id = easel

    async def stop_withdrawn(job_ids: Sequence[str]) -> list[str]:
        return [job_id for job_id in job_ids if job_id == "e" * 16]

    history.stop_withdrawn = stop_withdrawn
    await delivered(conn, "a" * 16, 100)
    request = RenderRequest("a dog", seed=1, steps=2).to_json()
    made_from = journal.NewJob("e" * 16, "vary", MEMBER, GUILD, CHANNEL, request, NOW, "a" * 16)
    await journal.insert_job(conn, made_from)  # still queued
    await delivered(conn, "b" * 16, 200)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [999]) == []
    assert sorted(await history.withdraw_deleted(GUILD, CHANNEL, [100])) == ["a" * 16, "e" * 16]
    await history.withhold_job("b" * 16, "a word banned since")
    withheld, entry = await policy.audit_log(GUILD)  # the latest first
    assert (withheld.user_id, withheld.setting) == (easel, WITHHELD_AUDITED_AS)
    assert withheld.new_value is not None and "b" * 16 in withheld.new_value
    assert (entry.user_id, entry.setting) == (easel, WITHDRAWAL_AUDITED_AS)
    assert entry.new_value is not None and "a" * 16 in entry.new_value
    assert entry.new_value.startswith("2 withdrawn, 1 unfinished stopped and refunded: ")
    assert "e" * 16 in entry.new_value
