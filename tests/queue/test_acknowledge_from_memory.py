"""What is checked before an interaction is acknowledged comes from memory (issue 12), on the
real SQLite file: once warm, nothing waits on SQLite, and every change is seen at once."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import memo
from bot.history import History
from bot.jobs import accounting
from bot.jobs.accounting import Member
from bot.jobs.queue import JobQueue, QuotaExceeded, Submission
from bot.jobs.retention import Retention
from bot.policy import guild
from bot.policy.guild import GuildList, GuildPolicy
from bot.policy.member_settings import MemberSettings, UserSettings
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota import RELAX_MAX_UNFINISHED_PICTURES, QuotaLimits
from bot.settings import Settings
from bot.user_errors import Reason, UserError
from db import quotas as db_quotas
from db.database import connect
from db.quotas import LimitScope
from inference.types import RenderRequest

GUILD, ADMIN, MEMBER = 100, 1, 2
CAT = RenderRequest("a cat", seed=1, steps=2)
RELAXED_CAT = dataclasses.replace(CAT, options={"relax": True})
NO_DM_LIMITS = QuotaLimits()
DEFAULT_QUEUE_BOUND = Settings.model_fields["max_queued_per_member"].default
# A burst like benchmarks/interactions.py's: four commands from each member, one server.
BURST, BURST_MEMBERS = 100, 25


@pytest.fixture
def policy(conn: aiosqlite.Connection) -> GuildPolicy:
    return GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))


@pytest.fixture
def queue(conn: aiosqlite.Connection, tmp_path: Path) -> JobQueue:
    # No render slot: a submitted job stays queued, its reservation open. The queue bound
    # as shipped: its check runs before the defer too.
    return JobQueue(conn, [], tmp_path / "images", max_queued_per_member=DEFAULT_QUEUE_BOUND)


@asynccontextmanager
async def counting_statements(conn: aiosqlite.Connection) -> AsyncIterator[list[str]]:
    """The SQL statements run on ``conn`` inside the block."""
    statements: list[str] = []
    await conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        await conn.set_trace_callback(None)


def submission(request: RenderRequest = CAT) -> Submission:
    return submission_of(MEMBER, request)


def submission_of(user_id: int, request: RenderRequest = CAT) -> Submission:
    return Submission(kind="imagine", request=request, user_id=user_id, guild_id=GUILD)


async def limit_member(policy: GuildPolicy, limits: QuotaLimits) -> None:
    await policy.set_quota(GUILD, ADMIN, LimitScope.USER, MEMBER, limits)


async def test_a_burst_in_one_server_wakes_each_waiting_plan_a_few_times_not_at_every_plans_end(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of one server's commands waits for its share of the prompt readers
    (``SERVER_THREADS``): each plan's end lets the next one in line check its turn, not every
    plan waiting. Waking them all was O(n²) wake-ups on the loop that sends the
    acknowledgements: it doubled the bot's CPU to the last acknowledgement of
    ``benchmarks/interactions.py`` (docs/performance.md, twelfth stop)."""
    planner = PromptPlanner(wildcards_dir=None, budget_s=60)  # counted, never timed
    policy = GuildPolicy(conn, prompts=planner)
    await policy.settings(GUILD)
    turn_checks: list[int | None] = []
    turn_awaited = planner._turn_awaited

    def counted(member_id: int | None, guild_id: int | None) -> object:
        turn_checks.append(member_id)
        return turn_awaited(member_id, guild_id)

    monkeypatch.setattr(planner, "_turn_awaited", counted)
    burst = [RenderRequest(f"a cat number {index}", seed=1, steps=2) for index in range(BURST)]
    admitted = await asyncio.gather(
        *(
            policy.admit(GUILD, None, False, request, member_id=index % BURST_MEMBERS)
            for index, request in enumerate(burst)
        )
    )
    assert [admission.request.prompt for admission in admitted] == [ask.prompt for ask in burst]
    # Each plan checks its turn as it comes and once per wake (a few when passed by another).
    # Before: about 2,500 checks for these 100 plans.
    assert len(turn_checks) <= 3 * BURST


@pytest.mark.parametrize("request_", [CAT, RELAXED_CAT], ids=["charged", "--relax"])
async def test_once_warm_nothing_before_the_defer_reads_sqlite(
    conn: aiosqlite.Connection, policy: GuildPolicy, queue: JobQueue, request_: RenderRequest
) -> None:
    """Also a free (``--relax``) request's caps: the member's unfinished jobs and pictures
    are counted in memory."""
    settings = MemberSettings(conn)
    await limit_member(policy, QuotaLimits(images_per_day=10))

    async def checks_before_the_defer() -> None:
        await settings.get(MEMBER)
        admission = await policy.admit(GUILD, None, False, request_)
        assert await queue.quota_refusal(submission(admission.request)) is None

    await checks_before_the_defer()
    await queue.submit(submission(request_))
    async with counting_statements(conn) as statements:
        await checks_before_the_defer()
    assert statements == []


async def test_a_relax_request_over_the_caps_is_refused_from_memory_as_sqlite_would(
    conn: aiosqlite.Connection, queue: JobQueue
) -> None:
    """The relax caps count the member's unfinished jobs and pictures in memory; a refusal is
    confirmed in SQLite and says what ``submit`` would. An end makes room at once."""
    four = dataclasses.replace(RELAXED_CAT, count=RELAX_MAX_UNFINISHED_PICTURES)
    first = await queue.submit(submission(four))
    refusal = await queue.quota_refusal(submission(RELAXED_CAT))
    assert refusal is not None and refusal.reason is Reason.QUOTA
    with pytest.raises(QuotaExceeded) as refused_at_submit:
        await queue.submit(submission(RELAXED_CAT))
    assert refusal.message == refused_at_submit.value.message
    await queue.cancel(first, Member(MEMBER, GUILD))
    async with counting_statements(conn) as statements:
        assert await queue.quota_refusal(submission(RELAXED_CAT)) is None
    assert statements == []


async def test_a_banned_word_refuses_the_very_next_request(
    conn: aiosqlite.Connection, policy: GuildPolicy
) -> None:
    owl = RenderRequest("an owl", seed=1, steps=2)
    await policy.admit(GUILD, None, False, owl)
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "Owl", add=True)
    with pytest.raises(UserError, match="The word 'owl' is banned"):
        await policy.admit(GUILD, None, False, owl)
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "owl", add=False)
    await policy.admit(GUILD, None, False, owl)


async def test_settings_are_seen_at_once_and_forgotten_with_the_member(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    settings = MemberSettings(conn)
    assert (await settings.get(MEMBER)).steps is None
    await settings.update(MEMBER, {"steps": 12})
    assert (await settings.get(MEMBER)).steps == 12
    history = History(conn, tmp_path / "images", tmp_path / "inputs", settings)
    await history.forget(MEMBER)
    assert (await settings.get(MEMBER)).steps is None


async def test_a_queued_job_counts_against_the_next_request_at_once(
    policy: GuildPolicy, queue: JobQueue
) -> None:
    await limit_member(policy, QuotaLimits(images_per_day=1))
    assert await queue.quota_refusal(submission()) is None
    await queue.submit(submission())
    refusal = await queue.quota_refusal(submission())
    assert refusal is not None and "used 1 of 1 images today" in refusal.message


async def test_a_refund_gives_the_images_back_without_a_read(
    conn: aiosqlite.Connection, policy: GuildPolicy, queue: JobQueue
) -> None:
    await limit_member(policy, QuotaLimits(images_per_day=1))
    assert await queue.quota_refusal(submission()) is None
    job_id = await queue.submit(submission())  # memory: 1 of 1 used
    await accounting.refund(conn, job_id, now=1.0)
    async with counting_statements(conn) as statements:
        assert await queue.quota_refusal(submission()) is None
    assert statements == []


async def test_the_measured_cost_replaces_the_estimate_at_once(
    conn: aiosqlite.Connection, policy: GuildPolicy, queue: JobQueue
) -> None:
    await limit_member(policy, QuotaLimits(gpu_seconds_per_day=10))
    job_id = await queue.submit(submission())  # estimated well under a second
    assert await queue.quota_refusal(submission()) is None
    await accounting.charge(conn, job_id, gpu_seconds=10.0, images=1, now=1.0)
    refusal = await queue.quota_refusal(submission())
    assert refusal is not None and "GPU" in refusal.message


async def test_an_admins_new_limit_applies_to_the_next_request(
    policy: GuildPolicy, queue: JobQueue
) -> None:
    await limit_member(policy, QuotaLimits(images_per_day=5))
    await queue.submit(submission())
    assert await queue.quota_refusal(submission()) is None
    await limit_member(policy, QuotaLimits(images_per_day=1))
    refusal = await queue.quota_refusal(submission())
    assert refusal is not None and "used 1 of 1 images today" in refusal.message
    await policy.set_quota(GUILD, ADMIN, LimitScope.USER, MEMBER, QuotaLimits())
    assert await queue.quota_refusal(submission()) is None


async def test_a_refusal_is_confirmed_in_the_ledger_first(
    conn: aiosqlite.Connection, policy: GuildPolicy, queue: JobQueue
) -> None:
    """Memory that counts too much (a reservation whose transaction rolled back) never
    refuses anyone."""
    await limit_member(policy, QuotaLimits(images_per_day=1))
    assert await queue.quota_refusal(submission()) is None
    member = Member(MEMBER, GUILD)
    await accounting.admit(conn, "0123456789abcdef", member, CAT, time.time(), NO_DM_LIMITS)
    await conn.execute("DELETE FROM quota_ledger")  # as a rollback would leave it
    assert await queue.quota_refusal(submission()) is None


@pytest.mark.parametrize("change", ["forget-me", "retention"])
async def test_forget_me_and_retention_make_the_next_check_read_the_ledger(
    conn: aiosqlite.Connection,
    policy: GuildPolicy,
    queue: JobQueue,
    tmp_path: Path,
    change: str,
) -> None:
    await limit_member(policy, QuotaLimits(images_per_day=5))
    assert await queue.quota_refusal(submission()) is None
    if change == "forget-me":
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        await history.forget(MEMBER)
    else:
        # A retention that prunes (settled ledger rows go): with 0 days it prunes none, and
        # anonymises only rows due, so what memory holds stays right.
        await Retention(conn, tmp_path / "images", tmp_path / "inputs", retention_days=1).prune()
    async with counting_statements(conn) as statements:
        assert await queue.quota_refusal(submission()) is None
    assert any("quota_ledger" in statement for statement in statements)


async def test_first_checks_take_one_trip_to_the_database_thread_per_query(
    conn: aiosqlite.Connection,
    policy: GuildPolicy,
    queue: JobQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every trip to aiosqlite's thread is a future and a thread switch on the event loop
    that sends the acknowledgements; a burst from members new to the bot pays them all."""
    settings = MemberSettings(conn)
    trips: list[object] = []
    execute = conn._execute

    async def counted(function: object, *args: object, **kwargs: object) -> object:
        trips.append(function)
        return await execute(function, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conn, "_execute", counted)
    await policy.settings(GUILD)
    assert len(trips) == 2  # the guild's settings and its lists
    trips.clear()
    await settings.get(MEMBER)
    assert await queue.quota_refusal(submission()) is None
    # The member's settings, their quota overrides and their spending: one trip each.
    assert len(trips) == 3


@asynccontextmanager
async def previous_process(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A connection to the test's database with memory of its own, as the process before a
    restart had (what is kept is per connection)."""
    connection = await connect(tmp_path / "easel.sqlite3")
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def started_queue(
    conn: aiosqlite.Connection, tmp_path: Path, clock: Callable[[], float] = time.time
) -> AsyncIterator[JobQueue]:
    """A queue started as the bot starts one (reading ahead what first checks need)."""
    queue = JobQueue(
        conn,
        [],
        tmp_path / "images",
        clock=clock,
        max_queued_per_member=DEFAULT_QUEUE_BOUND,
    )
    await queue.start()
    await queue.read_ahead()
    try:
        yield queue
    finally:
        await queue.stop()


def bounded_queue(conn: aiosqlite.Connection, tmp_path: Path) -> JobQueue:
    return JobQueue(conn, [], tmp_path / "images", max_queued_per_member=2)


async def test_the_queue_bound_counts_from_memory_and_an_end_makes_room_at_once(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue = bounded_queue(conn, tmp_path)
    first = await queue.submit(submission())
    await queue.submit(submission())
    refusal = await queue.quota_refusal(submission())
    assert refusal is not None and refusal.reason is Reason.QUEUE
    assert "at most 2 jobs waiting or running here" in refusal.message
    await queue.cancel(first, Member(MEMBER, GUILD))  # an end written: one job waits
    async with counting_statements(conn) as statements:
        assert await queue.quota_refusal(submission()) is None
    assert statements == []


async def test_jobs_left_unfinished_by_a_previous_process_count_against_the_bound(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    before = bounded_queue(conn, tmp_path)
    await before.submit(submission())
    await before.submit(submission())
    after = bounded_queue(conn, tmp_path)  # the next process, on the same journal
    await after.start()
    try:
        refusal = await after.quota_refusal(submission())
        assert refusal is not None and refusal.reason is Reason.QUEUE
    finally:
        await after.stop()


async def test_a_member_who_spent_nothing_lately_is_checked_without_reading_the_ledger(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """After a start every member is new to memory: the queue's start reads once who spent
    anything in the current periods and which guilds store limits (``accounting.read_ahead``),
    so the first check of one who did not spend (most of a burst's members) reads no spending;
    limits and spending written before the start are counted, and so is a job reserved since."""
    spender = MEMBER + 1
    async with previous_process(tmp_path) as previous:
        for member in (MEMBER, spender):
            one_a_day = QuotaLimits(images_per_day=1)
            await accounting.set_limits(
                previous, LimitScope.USER, GUILD, member, one_a_day, time.time()
            )
        await JobQueue(previous, [], tmp_path / "images").submit(submission_of(spender))
    async with started_queue(conn, tmp_path) as queue:
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission()) is None
        assert [statement for statement in statements if "quota_ledger" in statement] == []
        spent_before = await queue.quota_refusal(submission_of(spender))
        assert spent_before is not None and spent_before.reason is Reason.QUOTA
        job_id = await queue.submit(submission())
        spent_since = await queue.quota_refusal(submission())
        assert spent_since is not None and spent_since.reason is Reason.QUOTA
        await queue.cancel(job_id, Member(MEMBER, GUILD))  # refunded: room again
        assert await queue.quota_refusal(submission()) is None


async def test_spending_since_the_read_ahead_counts_once_memory_lets_it_go(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A member who had spent nothing at the start and reserves since is among those who
    spent: once memory lets their spending go (retention's prune drops all of it), their
    next check reads it again rather than taking them for one who spent nothing."""
    one_a_day = QuotaLimits(images_per_day=1)
    await accounting.set_limits(conn, LimitScope.USER, GUILD, MEMBER, one_a_day, time.time())
    async with started_queue(conn, tmp_path) as queue:
        await queue.submit(submission())
        await accounting.prune_settled(conn, 0.0)  # prunes no row; forgets every spending
        refusal = await queue.quota_refusal(submission())
        assert refusal is not None and refusal.reason is Reason.QUOTA


async def test_in_a_guild_that_sets_no_limit_a_new_members_first_check_reads_nothing(
    conn: aiosqlite.Connection, policy: GuildPolicy, tmp_path: Path
) -> None:
    """The queue's start reads which guilds store a limit override; in one that stores none,
    a member new to memory is checked with no SQL statement; once an admin sets a limit
    there, it is read and applies at once."""
    async with started_queue(conn, tmp_path) as queue:
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission()) is None
        assert statements == []
        await policy.set_quota(GUILD, ADMIN, LimitScope.GUILD, GUILD, QuotaLimits(images_per_day=0))
        refusal = await queue.quota_refusal(submission_of(MEMBER + 1))
        assert refusal is not None and refusal.reason is Reason.QUOTA


async def test_settings_read_ahead_answer_a_member_who_saved_none_without_a_read(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """``MemberSettings.read_ahead`` (the bot's start) reads who saved settings: another
    member's first /imagine reads none; settings saved before the start or since are used,
    from SQLite too once memory lets them go."""
    saver = MEMBER + 1
    async with previous_process(tmp_path) as previous:
        await MemberSettings(previous).update(saver, {"steps": 30})
    settings = MemberSettings(conn)
    await settings.read_ahead()
    async with counting_statements(conn) as statements:
        assert await settings.get(MEMBER) == UserSettings()
    assert statements == []
    assert (await settings.get(saver)).steps == 30
    await settings.update(MEMBER, {"steps": 20})
    settings.forget(MEMBER)  # out of memory: read again
    assert (await settings.get(MEMBER)).steps == 20


async def test_past_the_members_read_ahead_first_checks_read_as_before(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More members with spending or saved settings than ``MEMBERS_READ_AHEAD`` are not kept:
    a first check then reads, as it did before they were read ahead."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)  # both read-aheads' bound
    async with previous_process(tmp_path) as previous:
        for member in (MEMBER + 1, MEMBER + 2):
            await JobQueue(previous, [], tmp_path / "images").submit(submission_of(member))
            await MemberSettings(previous).update(member, {"steps": 30})
    settings = MemberSettings(conn)
    await settings.read_ahead()
    async with started_queue(conn, tmp_path) as queue:
        async with counting_statements(conn) as statements:
            assert await settings.get(MEMBER) == UserSettings()
            assert await queue.quota_refusal(submission()) is None
        read = " ".join(statements)
        assert "FROM user_settings" in read and "r.user_id = " in read


async def test_memory_that_missed_an_end_refuses_no_one_and_is_corrected(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue = bounded_queue(conn, tmp_path)
    first = await queue.submit(submission())
    await queue.submit(submission())
    await conn.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", (first,))
    await conn.commit()
    assert await queue.quota_refusal(submission()) is None  # confirmed in SQLite: one waits
    async with counting_statements(conn) as statements:
        assert await queue.quota_refusal(submission()) is None  # memory counts one now
    assert statements == []


# A quota period rollover: the read-ahead at NOV_30_LATE (a Monday) reads from November 1st;
# by DEC_1_EARLY the earliest current period is the week begun November 30th, so spending of
# NOV_10 counts in no period any more.
NOV_10 = datetime(2026, 11, 10, 12, tzinfo=UTC).timestamp()
NOV_30_LATE = datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp()
DEC_1_EARLY = datetime(2026, 12, 1, 1, tzinfo=UTC).timestamp()


def ledger_reads(statements: list[str]) -> list[str]:
    return [statement for statement in statements if "quota_ledger" in statement]


async def spent_at(tmp_path: Path, at: float, *members: int) -> None:
    """Each of ``members`` reserved one picture at ``at``, in the process before the start."""
    async with previous_process(tmp_path) as previous:
        for member in members:
            await JobQueue(previous, [], tmp_path / "images", clock=lambda: at).submit(
                submission_of(member)
            )


async def test_who_spent_only_before_a_new_period_is_checked_without_a_read_after_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The start's read-ahead follows the periods: a member whose spending all falls before
    the earliest current period (read ahead, or kept since their last check) is known to have
    spent nothing once it begins; one who spends after it is charged."""
    kept_member = MEMBER + 1  # checked before the new period: their spending is kept
    for member, images in ((MEMBER, 1), (kept_member, 2)):
        limits = QuotaLimits(images_per_month=images)
        await accounting.set_limits(conn, LimitScope.USER, GUILD, member, limits, NOV_10)
    await spent_at(tmp_path, NOV_10, MEMBER, kept_member)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        spent = await queue.quota_refusal(submission())  # confirmed in SQLite: not kept
        assert spent is not None and spent.reason is Reason.QUOTA
        assert await queue.quota_refusal(submission_of(kept_member)) is None
        clock[0] = DEC_1_EARLY
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission()) is None
            assert await queue.quota_refusal(submission_of(kept_member)) is None
        assert ledger_reads(statements) == []
        await queue.submit(submission())
        spent_since = await queue.quota_refusal(submission())
        assert spent_since is not None and "used 1 of 1 images this month" in spent_since.message


async def test_a_reservation_during_the_read_ahead_counts_after_a_new_period_begins(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of the read-ahead read before a member's reservation, and added after it,
    holds their older spending: the newer time is kept, so once a period begins between the
    two, their reservation still counts in it."""
    one_a_week = QuotaLimits(images_per_week=1)
    await accounting.set_limits(conn, LimitScope.USER, GUILD, MEMBER, one_a_week, NOV_10)
    await spent_at(tmp_path, NOV_10, MEMBER)
    clock = [NOV_30_LATE]
    queue = JobQueue(conn, [], tmp_path / "images", clock=lambda: clock[0])
    await queue.start()  # read ahead below, its page read before a reservation
    spenders_since = db_quotas.spenders_since

    async def read_before_a_reservation(
        *args: Any,
    ) -> AsyncIterator[list[tuple[tuple[int, int | None], float]]]:
        pages = [page async for page in spenders_since(*args)]
        await queue.submit(submission())  # reserved now, its page read already
        for page in pages:
            yield page

    monkeypatch.setattr(db_quotas, "spenders_since", read_before_a_reservation)
    try:
        await queue.read_ahead()
        clock[0] = DEC_1_EARLY
        refusal = await queue.quota_refusal(submission())
        assert refusal is not None and "used 1 of 1 images this week" in refusal.message
    finally:
        await queue.stop()


async def test_the_read_ahead_lets_go_of_last_periods_spenders_to_make_room(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who spent only before the current periods is let go once they begin, so the members
    kept stay those who spent in them: a bot up for months does not give up knowing who
    spent nothing (past ``MEMBERS_READ_AHEAD``) for everyone who ever spent."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)
    await spent_at(tmp_path, NOV_10, MEMBER + 1)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        clock[0] = DEC_1_EARLY
        await queue.submit(submission_of(MEMBER + 2))  # one kept: the member of November left
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission()) is None
        assert ledger_reads(statements) == []


# The Monday after: the earliest current period is December (begun on the 1st).
DEC_8 = datetime(2026, 12, 8, 12, tzinfo=UTC).timestamp()
NOV_1, NOV_30, DEC_1 = (
    datetime(2026, month, day, tzinfo=UTC).timestamp()
    for month, day in ((11, 1), (11, 30), (12, 1))
)


async def read_again_ended() -> None:
    """Wait for the spenders' read again in the background (``accounting``'s task, by its
    name), if one runs."""
    await asyncio.gather(
        *(task for task in asyncio.all_tasks() if task.get_name() == "easel-read-ahead-again")
    )


class SpendersReads:
    """The time each read of the spenders (``db.quotas.spenders_since``) read from; each
    waits for ``gate`` (open unless a test closes it) before its first page."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.since: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()
        spenders_since = db_quotas.spenders_since

        async def held(
            conn: aiosqlite.Connection, since: float, page: int
        ) -> AsyncIterator[list[tuple[tuple[int, int | None], float]]]:
            self.since.append(since)
            await self.gate.wait()
            async for rows in spenders_since(conn, since, page):
                yield rows

        monkeypatch.setattr(db_quotas, "spenders_since", held)


async def test_spenders_given_up_are_read_again_at_a_new_period_and_trusted_once_read(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MEMBERS_READ_AHEAD`` at the start the spenders are given up; once a period
    begins and lets last period's go, its first check reads them again in the background
    (reading SQLite itself meanwhile, as before any read-ahead), and once that read ends a
    member who spent nothing is checked without a read, one who spent in the period charged."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)
    spender = MEMBER + 2
    await accounting.set_limits(
        conn, LimitScope.USER, GUILD, spender, QuotaLimits(images_per_week=1), NOV_10
    )
    await spent_at(tmp_path, NOV_10, MEMBER + 1)  # last month only
    await spent_at(tmp_path, NOV_30_LATE, spender)  # this week too
    reads = SpendersReads(monkeypatch)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission()) is None
        assert ledger_reads(statements) != []  # given up: read as before
        await read_again_ended()
        assert reads.since == [NOV_1]  # the same period: not read again
        clock[0] = DEC_1_EARLY
        reads.gate.clear()
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission_of(MEMBER + 3)) is None
        assert reads.since == [NOV_1, NOV_30]
        assert ledger_reads(statements) != []  # its read again not ended: not trusted yet
        reads.gate.set()
        await read_again_ended()
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission_of(MEMBER + 4)) is None
        assert ledger_reads(statements) == []
        refusal = await queue.quota_refusal(submission_of(spender))
        assert refusal is not None and "used 1 of 1 images this week" in refusal.message
    assert reads.since == [NOV_1, NOV_30]


async def test_spenders_still_too_many_at_a_new_period_are_given_up_again_read_once_a_period(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read again that finds too many spenders still gives up again, and the checks and
    reservations of that period read as before without starting another read; the next
    period's first check reads them again."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)
    await spent_at(tmp_path, NOV_30_LATE, MEMBER + 1, MEMBER + 2)  # both in the week of Dec 1
    reads = SpendersReads(monkeypatch)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        clock[0] = DEC_1_EARLY
        for member in (MEMBER + 3, MEMBER + 4):
            assert await queue.quota_refusal(submission_of(member)) is None
            await read_again_ended()
        await queue.submit(submission())  # this period's only spender from the 8th
        await read_again_ended()
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission_of(MEMBER + 5)) is None
        assert ledger_reads(statements) != []  # given up again: read as before
        assert reads.since == [NOV_1, NOV_30]
        clock[0] = DEC_8
        assert await queue.quota_refusal(submission_of(MEMBER + 5)) is None
        await read_again_ended()
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission_of(MEMBER + 6)) is None
        assert ledger_reads(statements) == []  # one spender since the 1st: fits, trusted
    assert reads.since == [NOV_1, NOV_30, DEC_1]


async def test_a_read_again_still_running_at_the_stop_ends_with_the_queue(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop ends a read again of the spenders that is still running, and starts none
    after it: its next page would read a closed database (a warning at each stop in that
    window, or a task left pending)."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)
    await spent_at(tmp_path, NOV_30_LATE, MEMBER + 1, MEMBER + 2)  # given up at the start
    reads = SpendersReads(monkeypatch)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        clock[0] = DEC_1_EARLY
        reads.gate.clear()  # the read again waits before its first page
        assert await queue.quota_refusal(submission_of(MEMBER + 3)) is None
        (reading,) = (t for t in asyncio.all_tasks() if t.get_name() == "easel-read-ahead-again")
        await asyncio.sleep(0)
        assert reads.since == [NOV_1, NOV_30] and not reading.done()
    assert reading.cancelled()
    # Commands are still answered between the queue's stop and the database's close: a
    # check of a new period then reads, and starts no read again.
    clock[0] = DEC_8
    assert await queue.quota_refusal(submission_of(MEMBER + 4)) is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "easel-read-ahead-again"]
    assert reads.since == [NOV_1, NOV_30]


async def test_a_read_again_that_fails_is_told_once_and_tried_again_next_period(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read again that fails is one warning; that period's checks read SQLite and start
    no other; the next period's first check reads them again."""
    monkeypatch.setattr(memo, "MEMBERS_READ_AHEAD", 1)
    await spent_at(tmp_path, NOV_30_LATE, MEMBER + 1, MEMBER + 2)  # given up at the start
    reads = SpendersReads(monkeypatch)
    read = db_quotas.spenders_since
    failed: list[float] = []

    async def failing_once(
        conn: aiosqlite.Connection, since: float, page: int
    ) -> AsyncIterator[list[tuple[tuple[int, int | None], float]]]:
        if since == NOV_30:
            failed.append(since)
            raise sqlite3.OperationalError("disk I/O error")
        async for rows in read(conn, since, page):
            yield rows

    monkeypatch.setattr(db_quotas, "spenders_since", failing_once)
    clock = [NOV_30_LATE]
    async with started_queue(conn, tmp_path, lambda: clock[0]) as queue:
        clock[0] = DEC_1_EARLY
        for member in (MEMBER + 3, MEMBER + 4):
            async with counting_statements(conn) as statements:
                assert await queue.quota_refusal(submission_of(member)) is None
            assert ledger_reads(statements) != []  # failed: read as before
            await read_again_ended()
        warnings = [r for r in caplog.records if "could not read again" in r.getMessage()]
        assert len(warnings) == 1
        clock[0] = DEC_8
        assert await queue.quota_refusal(submission_of(MEMBER + 5)) is None
        await read_again_ended()
        async with counting_statements(conn) as statements:
            assert await queue.quota_refusal(submission_of(MEMBER + 6)) is None
        assert ledger_reads(statements) == []  # read again at the 8th: trusted
    assert failed == [NOV_30] and reads.since == [NOV_1, DEC_1]


async def test_the_settings_kept_are_the_servers_read_last_up_to_a_bound(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot in many servers keeps the settings of ``SERVER_SETTINGS_KEPT`` of them, those
    read last: one read lately is served from memory, the least recently read is read again
    from SQLite (and, read again, is as stored)."""
    monkeypatch.setattr(guild, "SERVER_SETTINGS_KEPT", 3)
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    await policy.set_default_model(GUILD + 1, ADMIN, "first-model")
    for guild_id in range(GUILD + 1, GUILD + 4):
        await policy.settings(guild_id)
    await policy.settings(GUILD + 1)  # read lately again: GUILD + 2 is the least recent
    await policy.settings(GUILD + 4)  # one more than kept
    async with counting_statements(conn) as statements:
        for guild_id in (GUILD + 1, GUILD + 3, GUILD + 4):
            await policy.settings(guild_id)
    assert statements == []
    async with counting_statements(conn) as statements:
        assert (await policy.settings(GUILD + 2)).default_model is None
    assert statements != []
    async with counting_statements(conn) as statements:  # GUILD + 1 made way for it
        assert (await policy.settings(GUILD + 1)).default_model == "first-model"
    assert statements != []
