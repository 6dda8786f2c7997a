"""Bans, kicks and timeouts made while Easel was offline: Discord sends none of them to a new
session, so from start-up Easel asks about each member with restored work in a server, in the
background; none of a member's restored work renders or is delivered before their answer, and
nobody else's waits for it. Real SQLite file, closed and opened again (the restart); Easel's
start and delivery gates (``DiscordResults``) over no Discord."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import discord
import pytest

from bot import bans
from bot.bans import (
    RESTORED_CHECK_TIMEOUT_S,
    RESTORED_CHECKS_AT_ONCE,
    MemberStops,
    Standing,
    StandingLookup,
    StopCause,
    StoppedMembers,
)
from bot.history import History, HistoryLine
from bot.jobs import accounting
from bot.jobs.queue import (
    CancelOutcome,
    DeliveryRetries,
    FinishedJob,
    JobQueue,
    JobState,
    Submission,
)
from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue.job_queue import SHUTDOWN_GRACE_S
from bot.jobs.scheduler import PriorityClass
from bot.policy.member_settings import MemberSettings
from bot.policy.quota import Period
from cogs.results.posting import DiscordResults
from cogs.results.progress import Pointer
from db import guild_settings as settings_audit
from db import jobs as journal
from db import quotas as ledger
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD, EASEL = 5, 999
KICKED, TIMED_OUT, UNCLEAR, STAYING = 71, 72, 73, 74


def job(user_id: int, prompt: str, guild_id: int | None = GUILD) -> Submission:
    return Submission("imagine", RenderRequest(prompt, seed=user_id, steps=2), user_id, guild_id)


class UndeliverableSink(RecordingSink):
    """Discord was unreachable when the result was finished: it stays undelivered."""

    async def deliver(self, job: FinishedJob) -> int | None:
        self.arrived.set()
        raise ConnectionError("discord is down")


class GatedResults(DiscordResults):
    """Easel's results, their start and delivery gates reading ``stopped``, over no Discord:
    each job's outcome is noted ("posted", "withheld", or its error), nothing is sent."""

    def __init__(self, stopped: StoppedMembers) -> None:
        super().__init__(cast(discord.Client, SimpleNamespace(get_guild=lambda _id: None)))
        self.stopped_members = stopped
        self.outcomes: dict[str, str] = {}
        self.notes: list[str] = []  # each outcome noted, in order
        self._noted = asyncio.Event()

    async def _post_result(
        self, job: FinishedJob, png: bytes | None
    ) -> tuple[int | None, Pointer | None]:
        self._note(job.job_id, "posted" if job.succeeded else str(job.error))
        return None, None

    async def _withhold(self, job: FinishedJob, why: str | None, *, refunded: bool) -> None:
        self._note(job.job_id, "withheld")

    def _note(self, job_id: str, outcome: str) -> None:
        self.outcomes[job_id] = outcome
        self.notes.append(job_id)
        self._noted.set()

    async def wait_for(self, *job_ids: str) -> None:
        async with asyncio.timeout(20):
            while not self.outcomes.keys() >= set(job_ids):
                self._noted.clear()
                await self._noted.wait()


async def previous_process(
    tmp_path: Path, finished_by: int, queued_by: tuple[int, ...]
) -> tuple[str, dict[int, str]]:
    """What the previous process left: a result of ``finished_by`` finished but never
    delivered, and a job of each of ``queued_by`` still queued."""
    images = tmp_path / "images"
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        before = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images)
        undeliverable = UndeliverableSink()
        before.set_sink(undeliverable)
        await before.start()
        rendered_before = await before.submit(job(finished_by, "finished before"))
        async with asyncio.timeout(20):
            await undeliverable.arrived.wait()
        await before.stop()
        left_queued = JobQueue(conn, [], images)  # not started: its jobs stay queued
        queued = {
            user: await left_queued.submit(job(user, f"queued by {user}")) for user in queued_by
        }
    finally:
        await conn.close()
    return rendered_before, queued


async def test_members_gone_or_timed_out_while_offline_lose_their_restored_jobs(
    tmp_path: Path,
) -> None:
    rendered_before, queued = await previous_process(
        tmp_path, KICKED, (KICKED, TIMED_OUT, UNCLEAR, STAYING)
    )
    conn = await connect(tmp_path / "easel.sqlite3")
    in_dm = await JobQueue(conn, [], tmp_path / "images").submit(
        job(KICKED, "in a DM", guild_id=None)
    )

    # The restart. Discord is asked about each member with work in the server, at once.
    restarted_at = time.time()  # the stops found at start-up come after it
    engine = InstantEngine()
    queue, results, stops = gated_queue(conn, tmp_path, engine, StoppedMembers())
    stopped = results.stopped_members
    assert stopped is not None
    asked: list[tuple[int, int]] = []
    all_asked, answers_given = asyncio.Event(), asyncio.Event()
    timeout_ends = time.time() + 600.0

    async def standing(guild_id: int, user_id: int) -> Standing:
        asked.append((guild_id, user_id))
        if len(asked) == 4:
            all_asked.set()
        await answers_given.wait()
        if user_id == UNCLEAR:
            raise ConnectionError("503 Service Unavailable")  # no clear answer: kept
        return Standing(
            gone=user_id == KICKED,
            timed_out_until=timeout_ends if user_id == TIMED_OUT else None,
        )

    try:
        async with asyncio.timeout(20):  # online at once: the answers are awaited meanwhile
            await queue.start(before_delivery=lambda: start_checks(stops, standing))
            await all_asked.wait()
        # Undecided: only the job in a DM, which concerns no server, renders and posts.
        await results.wait_for(in_dm)
        assert [request.prompt for request in engine.rendered] == ["in a DM"]
        assert results.outcomes == {in_dm: "posted"}
        answers_given.set()
        # Two cancelled, the result finished before the kick withheld, two rendered.
        await results.wait_for(*queued.values(), rendered_before)
    finally:  # the questions still asked are cancelled
        await stopped_and_closed(stops, queue, conn)

    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        assert sorted(asked) == [(GUILD, user) for user in (KICKED, TIMED_OUT, UNCLEAR, STAYING)]
        statuses = {
            job_id: record.status
            for job_id in [*queued.values(), in_dm, rendered_before]
            if (record := await journal.get_job(conn, job_id)) is not None
        }
        assert statuses == {
            queued[KICKED]: journal.JobStatus.CANCELLED,
            queued[TIMED_OUT]: journal.JobStatus.CANCELLED,
            queued[UNCLEAR]: journal.JobStatus.DONE,
            queued[STAYING]: journal.JobStatus.DONE,
            in_dm: journal.JobStatus.DONE,  # a DM concerns no server
            rendered_before: journal.JobStatus.DONE,
        }
        # The result finished before the kick is not posted.
        assert results.outcomes == {
            queued[KICKED]: "cancelled",
            queued[TIMED_OUT]: "cancelled",
            queued[UNCLEAR]: "posted",
            queued[STAYING]: "posted",
            in_dm: "posted",
            rendered_before: "withheld",
        }
        assert sorted(r.prompt for r in engine.rendered) == [
            "in a DM",
            f"queued by {UNCLEAR}",
            f"queued by {STAYING}",
        ]
        audit = {entry.setting: entry for entry in await settings_audit.audit_log(conn, GUILD, 10)}
        assert set(audit) == {StopCause.GONE.audited_as, StopCause.TIMEOUT.audited_as}
        assert audit[StopCause.GONE.audited_as].new_value == f"<@{KICKED}>: {queued[KICKED]}"
        timed_out = audit[StopCause.TIMEOUT.audited_as]
        assert (timed_out.user_id, timed_out.new_value) == (
            EASEL,
            f"<@{TIMED_OUT}>: {queued[TIMED_OUT]}",
        )
        # Refunded: the timed-out member's quota counts none of their cancelled picture.
        spent = await accounting.usage_by_period(conn, TIMED_OUT, GUILD, time.time())
        assert spent[Period.DAY].images == 0
        kept = await accounting.usage_by_period(conn, STAYING, GUILD, time.time())
        assert kept[Period.DAY].images == 1
    finally:
        await conn.close()
    # Until the timeout ends, the member's work begun before the start stays stopped there.
    assert stopped.holds(GUILD, TIMED_OUT, began_at=restarted_at)
    assert not stopped.holds(GUILD, STAYING, began_at=restarted_at)


async def test_members_are_asked_about_in_the_order_their_restored_work_would_start(
    tmp_path: Path,
) -> None:
    """The members with restored work are asked about in the order the queue would start
    their jobs (a priority job journaled later goes first), so the first render waits least;
    a member with only a result to post is asked last."""
    finished, _ = await previous_process(tmp_path, UNCLEAR, (KICKED,))
    conn = await connect(tmp_path / "easel.sqlite3")
    left_queued = JobQueue(conn, [], tmp_path / "images")  # not started: its jobs stay queued
    await left_queued.submit(
        dataclasses.replace(job(TIMED_OUT, "priority"), priority=PriorityClass.PRIORITY)
    )
    await left_queued.submit(job(STAYING, "journaled last"))
    queue, results, stops = gated_queue(conn, tmp_path, None, StoppedMembers())
    asked: list[int] = []

    async def standing(guild_id: int, user_id: int) -> Standing:
        asked.append(user_id)
        return Standing()

    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        await results.wait_for(finished)
    finally:
        await stopped_and_closed(stops, queue, conn)
    assert asked == [TIMED_OUT, KICKED, STAYING, UNCLEAR]


async def test_a_late_answer_stops_its_members_restored_work_and_holds_nobody_elses(
    tmp_path: Path,
) -> None:
    """Discord is slow to answer about one member: another member's restored job renders and
    posts meanwhile; the answer, gone, comes late, and the slow member's restored job never
    renders, nor does their finished result post."""
    finished, queued = await previous_process(tmp_path, KICKED, (KICKED, STAYING))
    conn = await connect(tmp_path / "easel.sqlite3")
    engine = InstantEngine()
    queue, results, stops = gated_queue(conn, tmp_path, engine, StoppedMembers())
    kicked_answered = asyncio.Event()

    async def standing(guild_id: int, user_id: int) -> Standing:
        if user_id == KICKED:
            await kicked_answered.wait()
            return Standing(gone=True)
        return Standing()

    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        await results.wait_for(queued[STAYING])
        assert results.outcomes == {queued[STAYING]: "posted"}
        kicked_answered.set()
        await results.wait_for(queued[KICKED], finished)
    finally:  # the questions still asked are cancelled
        await stopped_and_closed(stops, queue, conn)
    assert results.outcomes == {
        queued[STAYING]: "posted",
        queued[KICKED]: "cancelled",
        finished: "withheld",
    }
    assert [request.prompt for request in engine.rendered] == [f"queued by {STAYING}"]


async def test_a_moderators_word_heard_while_discord_is_asked_holds_over_its_answer(
    tmp_path: Path,
) -> None:
    """While Discord is asked about two members, a moderator bans one (heard live) and removes
    the other's timeout: Discord's answers, read before, are older. The banned member's
    restored work stays stopped for the ban's hour, not the end of the timeout Discord read;
    the other's renders and posts. A third member's, answered at once, went first."""
    finished, queued = await previous_process(tmp_path, KICKED, (KICKED, TIMED_OUT, STAYING))
    now = [time.time()]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0])
    conn = await connect(tmp_path / "easel.sqlite3")
    engine = InstantEngine()
    queue, results, stops = gated_queue(conn, tmp_path, engine, stopped)
    asked: list[int] = []
    both_asked, answers_given = asyncio.Event(), asyncio.Event()

    async def standing(guild_id: int, user_id: int) -> Standing:
        if user_id == STAYING:
            return Standing()
        asked.append(user_id)
        if len(asked) == 2:
            both_asked.set()
        await answers_given.wait()
        return Standing(timed_out_until=now[0] + 60.0)  # read before the moderator's word

    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        async with asyncio.timeout(20):
            await both_asked.wait()
        await results.wait_for(queued[STAYING])
        # As ``BansCog`` hears them: a ban, and a timeout removed early.
        await stops.cancel_jobs(GUILD, KICKED, StopCause.BAN, easel_id=EASEL)
        stops.may_work_again(GUILD, TIMED_OUT)
        answers_given.set()
        await results.wait_for(queued[KICKED], finished, queued[TIMED_OUT])
    finally:
        await stopped_and_closed(stops, queue, conn)
    assert results.outcomes == {
        queued[STAYING]: "posted",
        queued[TIMED_OUT]: "posted",  # the timeout's removal holds over Discord's answer
        queued[KICKED]: "cancelled",  # by the ban
        finished: "withheld",
    }
    assert [request.prompt for request in engine.rendered] == [
        f"queued by {STAYING}",
        f"queued by {TIMED_OUT}",
    ]
    now[0] += 120.0  # past the end of the timeout Discord read: the ban's hour holds
    assert stopped.holds(GUILD, KICKED, began_at=now[0] - 130.0)
    assert not stopped.holds(GUILD, TIMED_OUT, began_at=now[0] - 130.0)


async def test_a_stop_while_discord_is_asked_ends_at_once_and_keeps_the_restored_work(
    tmp_path: Path,
) -> None:
    """Easel stops while Discord has not answered about a member: the stop does not wait for
    the answer (nor for the queue's grace), and the member's restored job stays queued, their
    finished result undelivered, for the next start's check."""
    finished, queued = await previous_process(tmp_path, KICKED, (KICKED,))
    conn = await connect(tmp_path / "easel.sqlite3")
    queue, results, stops = gated_queue(conn, tmp_path, InstantEngine(), StoppedMembers())
    asked = asyncio.Event()

    async def hangs(guild_id: int, user_id: int) -> Standing:
        asked.set()
        await asyncio.Event().wait()  # never answered
        raise AssertionError("unreachable")

    try:
        await queue.start(before_delivery=lambda: start_checks(stops, hangs))
        await asyncio.wait_for(asked.wait(), 20)
        async with asyncio.timeout(SHUTDOWN_GRACE_S / 2):  # as ``EaselBot.close`` stops
            await stops.stop_restored_checks()
            await queue.stop()
        assert results.outcomes == {}
        left = [await journal.get_job(conn, job_id) for job_id in (queued[KICKED], finished)]
        assert [record.status for record in left if record is not None] == [
            journal.JobStatus.QUEUED,
            journal.JobStatus.DONE,
        ]
        assert [job.id for job in await journal.finished_undelivered(conn)] == [finished]
    finally:
        await conn.close()


class HeldNotices(GatedResults):
    """Discord holds each notice of a job ended unrendered (a cancel's): a 429 retried on."""

    def __init__(self, stopped: StoppedMembers) -> None:
        super().__init__(stopped)
        self.held = asyncio.Event()

    async def _post_result(
        self, job: FinishedJob, png: bytes | None
    ) -> tuple[int | None, Pointer | None]:
        if not job.succeeded:
            self.held.set()
            await asyncio.Event().wait()  # never answered
        return await super()._post_result(job, png)


async def test_a_stop_cuts_short_a_start_up_cancel_whose_notice_discord_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord's answer about a member, gone, cancels their restored job, and Discord holds
    its notice. Easel's stop lets that cancel finish for ``APPLYING_GRACE_S``, not for
    Discord: its end was journaled before the notice, which the next start posts, and its
    audit entry is written as it is cut short."""
    monkeypatch.setattr(bans, "APPLYING_GRACE_S", 0.2)
    _, queued = await previous_process(tmp_path, STAYING, (KICKED,))

    async def standing(guild_id: int, user_id: int) -> Standing:
        return Standing(gone=user_id == KICKED)

    conn = await connect(tmp_path / "easel.sqlite3")
    queue, results, stops = gated_queue(conn, tmp_path, None, StoppedMembers(), HeldNotices)
    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        await asyncio.wait_for(cast(HeldNotices, results).held.wait(), 20)
        async with asyncio.timeout(SHUTDOWN_GRACE_S / 2):  # as ``EaselBot.close`` stops
            await stops.stop_restored_checks()
            await queue.stop()
        record = await journal.get_job(conn, queued[KICKED])
        assert record is not None and record.status is journal.JobStatus.CANCELLED
        audit = await settings_audit.audit_log(conn, GUILD, 10)
        assert [(entry.user_id, entry.setting, entry.new_value) for entry in audit] == [
            (EASEL, StopCause.GONE.audited_as, f"<@{KICKED}>: {queued[KICKED]}")
        ]
    finally:
        await conn.close()

    conn = await connect(tmp_path / "easel.sqlite3")  # the next start posts the notice
    queue, results, stops = gated_queue(conn, tmp_path, None, StoppedMembers())
    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        await results.wait_for(queued[KICKED])
    finally:
        await stopped_and_closed(stops, queue, conn)
    assert results.outcomes[queued[KICKED]] == "cancelled"


@pytest.mark.parametrize("cut_short", [False, True], ids=["finished", "cut-short"])
async def test_a_members_own_cancel_is_not_audited_as_the_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_short: bool
) -> None:
    """Discord's answer about a member, gone, cancels their two restored jobs; the member
    cancels the first themselves just as the stop's cancels begin. The server's audit names
    the second only, as the stop's: also when Easel's stop cuts the cancels short (Discord
    holding the notices), and the audit entry is written from what they ended."""
    monkeypatch.setattr(bans, "APPLYING_GRACE_S", 0.2)
    _, queued = await previous_process(tmp_path, STAYING, (KICKED,))
    own = queued[KICKED]
    conn = await connect(tmp_path / "easel.sqlite3")
    stops_own = await JobQueue(conn, [], tmp_path / "images").submit(job(KICKED, "second"))
    gates = HeldNotices if cut_short else GatedResults
    queue, results, stops = gated_queue(conn, tmp_path, None, StoppedMembers(), gates)
    read_unfinished, own_cancel = History.unfinished, []

    async def unfinished_then_own_cancel(
        history: History, user_id: int, *, guild_id: int | None
    ) -> list[HistoryLine]:
        lines = await read_unfinished(history, user_id, guild_id=guild_id)
        own_cancel.append(asyncio.create_task(queue.cancel(own, accounting.Member(KICKED, GUILD))))
        await until_state(queue, own, lambda state: state.status is journal.JobStatus.CANCELLED)
        return lines

    monkeypatch.setattr(History, "unfinished", unfinished_then_own_cancel)

    async def standing(guild_id: int, user_id: int) -> Standing:
        return Standing(gone=user_id == KICKED)

    try:
        await queue.start(before_delivery=lambda: start_checks(stops, standing))
        if cut_short:  # its end journaled, its notice held
            await until_state(
                queue, stops_own, lambda state: state.status is journal.JobStatus.CANCELLED
            )
        else:
            await results.wait_for(own, stops_own)
        async with asyncio.timeout(SHUTDOWN_GRACE_S / 2):
            await stops.stop_restored_checks()
            await queue.stop()
        audit = await settings_audit.audit_log(conn, GUILD, 10)
    finally:
        await conn.close()
    assert [(entry.user_id, entry.setting, entry.new_value) for entry in audit] == [
        (EASEL, StopCause.GONE.audited_as, f"<@{KICKED}>: {stops_own}")
    ]


async def test_a_restored_job_waiting_for_its_answer_reads_as_waiting_not_rendering(
    tmp_path: Path,
) -> None:
    """Handed out to start, a restored job waits out of its slot's way for Discord's answer:
    it reads as waiting for the check (not rendering, at no place), and lists on no device."""
    async with restored_job_parked(tmp_path, InstantEngine()) as (queue, results, restored, _):
        state = await queue.state(restored)
        assert state is not None
        assert (state.status, state.position, state.eta_s) == (journal.JobStatus.QUEUED, None, None)
        snapshot = queue.snapshot()
        assert (snapshot.running, snapshot.queued) == ((), ())
        assert [job.job_id for job in snapshot.awaiting_check] == [restored]
        results.answer.set()
        await results.wait_for(restored)
    assert results.outcomes[restored] == "posted"


async def test_a_cancel_of_a_restored_job_as_its_answer_comes_ends_it_unrendered(
    tmp_path: Path,
) -> None:
    """The member cancels their restored job just as Discord's answer (in the server) lets it
    queue again, while the queue's lock is busy (a dispatcher's): told nothing is charged, it
    never renders."""
    engine = InstantEngine()
    async with restored_job_parked(tmp_path, engine) as (queue, results, restored, _):
        async with queue._wakeup:  # the queue's lock, busy
            results.answer.set()
            # Its wait is over: it waits for the lock to queue again.
            await until_state(queue, restored, lambda state: not state.awaiting_check)
            outcome = await queue.cancel(restored, accounting.Member(STAYING, GUILD))
        await results.wait_for(restored)
    assert outcome is CancelOutcome.STOPPING_FREE
    assert results.outcomes[restored] == "cancelled"
    assert engine.rendered == []


async def test_a_cancel_of_a_restored_job_waiting_for_its_answer_ends_it_at_once(
    tmp_path: Path,
) -> None:
    """The member cancels their restored job while it waits for Discord's answer about them:
    it ends then (it never started), cancelled, refunded and its notice posted, not once the
    answer comes; the answer, when it comes, finds nothing to do: no render, no second end."""
    engine = InstantEngine()
    async with restored_job_parked(tmp_path, engine) as (queue, results, restored, conn):
        outcome = await queue.cancel(restored, accounting.Member(STAYING, GUILD))
        await results.wait_for(restored)  # its notice
        stopped = results.stopped_members
        assert stopped is not None and stopped.awaiting_answer(GUILD, STAYING)  # not answered
        state = await queue.state(restored)
        assert state is not None
        assert (state.status, state.awaiting_check) == (journal.JobStatus.CANCELLED, False)
        assert queue.snapshot().awaiting_check == ()
        assert await ledger.refunded(conn, restored)
        spent = await accounting.usage_by_period(conn, STAYING, GUILD, time.time())
        results.answer.set()  # late: nothing is left for it to do
        await stopped.wait_for_answer(GUILD, STAYING)
        await queue.stop_withdrawn([restored])  # a later stop finds it ended too
        assert await accounting.usage_by_period(conn, STAYING, GUILD, time.time()) == spent
    assert outcome is CancelOutcome.CANCELLED
    assert results.notes.count(restored) == 1  # one end, one notice
    assert results.outcomes[restored] == "cancelled"
    assert spent[Period.DAY].images == 1  # their result finished before the restart
    assert engine.rendered == []


async def test_a_members_new_result_posts_while_their_restored_one_waits_for_its_answer(
    tmp_path: Path,
) -> None:
    """A member's result restored at start-up waits for Discord's answer about them, and
    their job begun since in the same channel (its live command passed every check) does
    not: it renders and posts meanwhile. The restored one posts once the answer comes."""
    finished, _ = await previous_process(tmp_path, STAYING, ())
    conn = await connect(tmp_path / "easel.sqlite3")
    engine = InstantEngine()
    queue, gates, stops = gated_queue(conn, tmp_path, engine, StoppedMembers(), ParkedResults)
    results = cast(ParkedResults, gates)
    try:
        await queue.start(before_delivery=lambda: start_checks(stops, results.standing))
        begun_since = await queue.submit(job(STAYING, "begun since"))
        await results.wait_for(begun_since)
        assert results.outcomes == {begun_since: "posted"}
        results.answer.set()
        await results.wait_for(finished)
    finally:
        results.answer.set()
        await stopped_and_closed(stops, queue, conn)
    assert results.notes == [begun_since, finished]
    assert results.outcomes == {begun_since: "posted", finished: "posted"}


class FirstPostFails(GatedResults):
    """Discord refuses the first post of each result but the restored ones (a 503), then
    takes it; it answers about the restored work's makers once ``answer``."""

    def __init__(self, stopped: StoppedMembers) -> None:
        super().__init__(stopped)
        self.answer = asyncio.Event()
        self.refused: set[str] = set()
        self.started_at = time.time()  # after the previous process's jobs

    async def _post_result(
        self, job: FinishedJob, png: bytes | None
    ) -> tuple[int | None, Pointer | None]:
        if job.created_at > self.started_at and job.job_id not in self.refused:
            self.refused.add(job.job_id)
            raise ConnectionError("503 Service Unavailable")
        return await super()._post_result(job, png)

    async def standing(self, guild_id: int, user_id: int) -> Standing:
        await self.answer.wait()
        return Standing()


@pytest.mark.parametrize("per_sweep", [20, 1])
async def test_a_sweep_tries_other_results_while_a_restored_one_waits_for_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_sweep: int
) -> None:
    """A result restored at start-up, due for another try of its post, waits for Discord's
    answer about its maker; the delivery sweep's next rounds try another member's failed post
    meanwhile, rather than wait for that answer, or fill their page with it (a page of one
    stands for the 20 of many members' restored results due)."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # failed: the sweep's
    finished, _ = await previous_process(tmp_path, STAYING, ())
    conn = await connect(tmp_path / "easel.sqlite3")
    await journal.delivery_failed(conn, finished, time.time(), time.time())  # due
    await conn.commit()
    quick = DeliveryRetries(
        sweep_every_s=0.02, first_wait_s=0.01, longest_wait_s=0.05, per_sweep=per_sweep
    )
    queue, gates, stops = gated_queue(
        conn, tmp_path, InstantEngine(), StoppedMembers(), FirstPostFails, quick
    )
    results = cast(FirstPostFails, gates)
    swept, deliveries_due = asyncio.Event(), journal.deliveries_due

    async def noting_the_sweep(*args: Any, **kwargs: Any) -> list[journal.JobRecord]:
        swept.set()
        return await deliveries_due(*args, **kwargs)

    monkeypatch.setattr(journal, "deliveries_due", noting_the_sweep)
    try:
        await queue.start(before_delivery=lambda: start_checks(stops, results.standing))
        await asyncio.wait_for(swept.wait(), 20)  # a sweep ran, the restored result due
        refused_once = await queue.submit(job(UNCLEAR, "refused once"))
        await results.wait_for(refused_once)
        assert results.refused == {refused_once}  # posted by the sweep's try
        stopped = results.stopped_members
        assert stopped is not None and stopped.awaiting_answer(GUILD, STAYING)  # not answered
        results.answer.set()
        await results.wait_for(finished)
    finally:
        results.answer.set()
        await stopped_and_closed(stops, queue, conn)
    assert results.outcomes == {refused_once: "posted", finished: "posted"}


class ParkedResults(GatedResults):
    """Gates over a Discord that answers about the restored work's makers once ``answer``."""

    def __init__(self, stopped: StoppedMembers) -> None:
        super().__init__(stopped)
        self.answer = asyncio.Event()

    async def standing(self, guild_id: int, user_id: int) -> Standing:
        await self.answer.wait()
        return Standing()


@contextlib.asynccontextmanager
async def restored_job_parked(
    tmp_path: Path, engine: InstantEngine
) -> AsyncIterator[tuple[JobQueue, ParkedResults, str, aiosqlite.Connection]]:
    """Easel started over a member's restored job (in the server), handed out to start and
    waiting for Discord's answer about them (``ParkedResults.answer``), and its database;
    stopped at the end."""
    _, queued = await previous_process(tmp_path, STAYING, (STAYING,))
    conn = await connect(tmp_path / "easel.sqlite3")
    queue, gates, stops = gated_queue(conn, tmp_path, engine, StoppedMembers(), ParkedResults)
    results = cast(ParkedResults, gates)
    try:
        await queue.start(before_delivery=lambda: start_checks(stops, results.standing))
        await until_state(queue, queued[STAYING], lambda state: state.awaiting_check)
        yield queue, results, queued[STAYING], conn
    finally:
        results.answer.set()
        await stopped_and_closed(stops, queue, conn)


async def until_state(queue: JobQueue, job_id: str, holds: Callable[[JobState], bool]) -> None:
    """Until ``job_id``'s state satisfies ``holds`` (each read yields to the queue's tasks)."""
    async with asyncio.timeout(20):
        while (state := await queue.state(job_id)) is None or not holds(state):
            pass


def gated_queue(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    engine: InstantEngine | None,
    stopped: StoppedMembers,
    gates: type[GatedResults] = GatedResults,
    retries: DeliveryRetries | None = None,
) -> tuple[JobQueue, GatedResults, MemberStops]:
    """A queue rendering on ``engine`` (None: no device, its jobs stay queued) whose start
    and delivery gates (``gates``) read ``stopped``, its failed posts tried again as
    ``retries`` says, and the stops over it."""
    images = tmp_path / "images"
    slots = [] if engine is None else [DeviceWorker("cpu", lambda _: engine)]
    queue = JobQueue(conn, slots, images, delivery_retries=retries)
    results = gates(stopped)
    queue.set_sink(results)
    queue.set_start_gate(results)
    history = History(conn, images, tmp_path / "inputs", MemberSettings(conn))
    return queue, results, MemberStops(conn, queue, history, stopped)


async def stopped_and_closed(
    stops: MemberStops, queue: JobQueue, conn: aiosqlite.Connection
) -> None:
    """Easel's stop as ``EaselBot.close`` orders it, then the database closed."""
    await stops.stop_restored_checks()
    await queue.stop()
    await conn.close()


async def start_checks(stops: MemberStops, lookup: StandingLookup) -> None:
    await stops.start_restored_checks(lookup, easel_id=EASEL)


async def stops_over(
    tmp_path: Path, stopped: StoppedMembers, clock: Callable[[], float] = time.time
) -> tuple[MemberStops, JobQueue, aiosqlite.Connection]:
    """A queue left unstarted (its jobs stay queued) and the stops over it."""
    conn = await connect(tmp_path / "easel.sqlite3")
    queue = JobQueue(conn, [], tmp_path / "images")
    history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
    return MemberStops(conn, queue, history, stopped, clock=clock), queue, conn


async def test_the_check_gives_up_at_its_deadline_and_keeps_the_undecided_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord hangs: the check ends at its deadline (each member's restored work waits until
    their answer, or it), not after 10 s per batch of members; the members it did not decide
    keep their jobs, which wait no more, and the log counts none as decided."""
    caplog.set_level(logging.INFO, logger="bot.bans")
    stopped = StoppedMembers()
    stops, queue, conn = await stops_over(tmp_path, stopped)
    users = range(100, 100 + 2 * RESTORED_CHECKS_AT_ONCE)
    queued = [await queue.submit(job(user, f"queued by {user}")) for user in users]
    asked: list[int] = []

    async def hangs(guild_id: int, user_id: int) -> Standing:
        asked.append(user_id)
        await asyncio.Event().wait()  # never answered
        raise AssertionError("unreachable")

    try:
        # Without the deadline: two batches of 10 s each.
        members = await stops.await_restored_answers()
        async with asyncio.timeout(RESTORED_CHECK_TIMEOUT_S):
            await stops.check_restored_jobs(members, hangs, easel_id=EASEL, deadline_s=0.5)
        assert len(asked) == RESTORED_CHECKS_AT_ONCE  # the second batch was never asked
        decided = f"0 of {len(users)} member(s) with restored jobs decided by Discord's answer"
        assert f"start-up: {decided}" in caplog.messages
        assert not any(stopped.awaiting_answer(GUILD, user) for user in users)
        for job_id in queued:
            record = await journal.get_job(conn, job_id)
            assert record is not None and record.status is journal.JobStatus.QUEUED
    finally:
        await conn.close()


async def test_the_questions_leave_most_of_discords_rate_limit_to_easels_other_requests(
    tmp_path: Path,
) -> None:
    """The start-up's questions begin 25 a second at most, however fast Discord answers and
    however late the loop runs (a busy spell here): Discord's global rate limit, which a
    burst would exceed and discord.py would then hold Easel's channel posts and REST fetches
    for, is shared. Half of its 50 a second: the figure, not the setting, which could drift."""
    stops, queue, conn = await stops_over(tmp_path, StoppedMembers())
    users = range(100, 106)
    for user in users:
        await queue.submit(job(user, f"queued by {user}"))
    loop = asyncio.get_running_loop()
    asked_at: list[float] = []

    async def standing(guild_id: int, user_id: int) -> Standing:
        asked_at.append(loop.time())
        if len(asked_at) == 1:
            # The loop busy past the later questions' turns (blocked on purpose: it stands
            # for other tasks' work): they must not then begin together.
            time.sleep(len(users) / 25)  # noqa: ASYNC251
        return Standing()

    try:
        members = await stops.await_restored_answers()
        await stops.check_restored_jobs(members, standing, easel_id=EASEL)
    finally:
        await conn.close()
    assert len(asked_at) == len(users)
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked_at)]
    assert min(gaps) >= 0.9 / 25  # a tenth for the loop's clock


async def test_a_member_beyond_what_a_fixed_deadline_would_reach_is_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More members than the pace can ask within ``RESTORED_CHECKS_DEADLINE_S``: the deadline
    grows with them, and the last one asked, banned, has their restored job cancelled and is
    held, not released undecided with it. (10 a second and 1.5 s here: a fixed deadline would
    reach about 15 of the 25; a gap of 100 ms leaves a loaded machine's loop time to keep up.)"""
    monkeypatch.setattr(bans, "RESTORED_CHECKS_PER_S", 10.0)
    monkeypatch.setattr(bans, "RESTORED_CHECKS_DEADLINE_S", 1.5)
    stopped = StoppedMembers()
    stops, queue, conn = await stops_over(tmp_path, stopped)
    users = range(100, 125)
    last = users[-1]
    queued = [await queue.submit(job(user, f"queued by {user}")) for user in users]

    async def standing(guild_id: int, user_id: int) -> Standing:
        return Standing(gone=user_id == last)

    try:
        members = await stops.await_restored_answers()
        assert members[-1] == (GUILD, last)
        await stops.check_restored_jobs(members, standing, easel_id=EASEL)
        record = await journal.get_job(conn, queued[-1])
        assert record is not None and record.status is journal.JobStatus.CANCELLED
    finally:
        await conn.close()
    assert stopped.holds(GUILD, last, began_at=time.time() - 1.0)


async def test_the_start_reads_the_order_to_ask_in_without_walking_the_fair_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The members' order is read from their journaled jobs (class, then submit time), not by
    walking the scheduler's fair order, which runs inside ``setup_hook`` and took 0.6 s at
    20,000 queued jobs."""
    stops, queue, conn = await stops_over(tmp_path, StoppedMembers())
    await queue.submit(job(KICKED, "standard"))
    await queue.submit(dataclasses.replace(job(TIMED_OUT, "relax"), priority=PriorityClass.RELAX))
    await queue.submit(
        dataclasses.replace(job(STAYING, "priority"), priority=PriorityClass.PRIORITY)
    )

    def walked(*args: Any, **kwargs: Any) -> object:
        raise AssertionError("the fair order was walked")

    monkeypatch.setattr(queue, "snapshot", walked)
    try:
        members = await stops.await_restored_answers()
    finally:
        await conn.close()
    assert members == [(GUILD, STAYING), (GUILD, KICKED), (GUILD, TIMED_OUT)]


async def test_a_deleted_servers_restored_jobs_are_cancelled_refunded_and_not_audited(
    tmp_path: Path,
) -> None:
    gone_guild = GUILD + 1
    stops, queue, conn = await stops_over(tmp_path, StoppedMembers())
    in_gone = [await queue.submit(job(user, "lost", guild_id=gone_guild)) for user in (71, 72)]
    staying = await queue.submit(job(STAYING, "kept"))

    async def standing(guild_id: int, user_id: int) -> Standing:
        return Standing(server_gone=guild_id == gone_guild)  # 404 Unknown Guild

    try:
        members = await stops.await_restored_answers()
        await stops.check_restored_jobs(members, standing, easel_id=EASEL)
        statuses = [
            record.status
            for job_id in [*in_gone, staying]
            if (record := await journal.get_job(conn, job_id)) is not None
        ]
        cancelled = journal.JobStatus.CANCELLED
        assert statuses == [cancelled, cancelled, journal.JobStatus.QUEUED]
        spent = await accounting.usage_by_period(conn, 71, gone_guild, time.time())
        assert spent[Period.DAY].images == 0
        assert await settings_audit.audit_log(conn, gone_guild, 10) == []
    finally:
        await conn.close()


async def test_an_automod_timeout_holds_until_the_end_discord_gives(tmp_path: Path) -> None:
    """AutoMod's audit entry names no end: the jobs are cancelled at once, then the hold
    follows the end Discord gives (a week here, past a ban's hour); unanswered, the hour."""
    now = [time.time()]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0], monotonic=lambda: now[0])
    stops, queue, conn = await stops_over(tmp_path, stopped, lambda: now[0])
    spam = await queue.submit(job(TIMED_OUT, "spam"))
    week_end = now[0] + 7 * 86400

    async def standing(guild_id: int, user_id: int) -> Standing:
        if user_id == UNCLEAR:
            raise ConnectionError("503 Service Unavailable")
        return Standing(timed_out_until=week_end)

    try:
        begun = now[0] - 1.0
        for member in (TIMED_OUT, UNCLEAR):
            await stops.cancel_for_automod_timeout(GUILD, member, standing, easel_id=EASEL)
        record = await journal.get_job(conn, spam)
        assert record is not None and record.status is journal.JobStatus.CANCELLED
        now[0] += 2 * 3600.0
        assert stopped.holds(GUILD, TIMED_OUT, began_at=begun)
        assert not stopped.holds(GUILD, UNCLEAR, began_at=begun)
        now[0] = week_end
        assert not stopped.holds(GUILD, TIMED_OUT, began_at=begun)
    finally:
        await conn.close()
