"""The statements a start, retention and every dashboard poll run read the rows they need by
an index (0023), not every server's reservations nor every ended job: at 600,000 jobs those
took 0.4 to 6 s. These are the plans without statistics, a new database's; Easel's refreshed
statistics (``db.database.refresh_planner_statistics``) changed none of them for the worse at
600,000 jobs (docs/performance.md, "Planner statistics")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiosqlite
import pytest

from db import dashboard, history
from db import jobs as journal
from inference.types import RenderRequest
from tests.support.sqlite_work import instructions_of

Call = Callable[[aiosqlite.Connection], Awaitable[object]]

INDEXED: dict[str, tuple[Call, str]] = {
    "finished_undelivered": (journal.finished_undelivered, "jobs_undelivered"),
    "ended_unsettled": (journal.ended_unsettled, "jobs_undelivered"),
    "prune_jobs": (
        lambda conn: history.prune_jobs(conn, finished_before=0.0, at_most=10),
        "jobs_finished",
    ),
    "usage_by_member": (
        lambda conn: dashboard.usage_by_member(conn, 5, since=0.0),
        "quota_ledger_guild (guild_id=? AND kind=? AND at>?)",
    ),
    # Plain /cancel's second read: not the member's every job (jobs_user).
    "latest_unposted_result_of": (
        lambda conn: journal.latest_unposted_result_of(conn, 1, 5),
        "jobs_unposted_results (user_id=? AND guild_id=?)",
    ),
    # /cancel's read of the member's unfinished jobs: those alone, not their every job there
    # (jobs_member_server, 0044, gives the order by created_at for free).
    "unfinished_jobs_of": (
        lambda conn: journal.unfinished_jobs_of(conn, 1, 5),
        "jobs_unfinished_member (user_id=? AND guild_id=?)",
    ),
    # /history's "N in all": the member's jobs of that server, from the index alone (0044),
    # not a table row for each of the member's every job (jobs_user).
    "count_of_jobs": (
        lambda conn: history.count_of_jobs(conn, 1, guild_id=5, search=None),
        "COVERING INDEX jobs_member_server (user_id=? AND guild_id=?)",
    ),
    # The dashboard's "N more of this server's jobs": not every server's unfinished jobs.
    "unfinished_count": (
        lambda conn: dashboard.unfinished_count(conn, 5),
        "jobs_unfinished_server (guild_id=?)",
    ),
}


async def plans_of(conn: aiosqlite.Connection, call: Call) -> list[str]:
    """The query plan of each statement ``call`` runs, one line per step."""
    raw = conn._conn  # the sqlite3 connection: its trace callback sees every statement
    statements: list[str] = []
    await conn._execute(raw.set_trace_callback, statements.append)
    try:
        await call(conn)
    finally:
        await conn._execute(raw.set_trace_callback, None)
    return [
        str(row[3])
        for sql in statements
        for row in await conn.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}")
    ]


@pytest.mark.parametrize("name", INDEXED)
async def test_the_statement_starts_from_its_index(conn: aiosqlite.Connection, name: str) -> None:
    call, index = INDEXED[name]
    plan = await plans_of(conn, call)
    assert any(index in step for step in plan), plan
    # Neither every reservation of every server (quota_ledger_at by kind) nor every job
    # in a status (jobs_status).
    assert not [step for step in plan if "quota_ledger_at" in step or "jobs_status" in step]


async def test_a_journaled_jobs_inputs_are_read_from_that_job_alone(
    conn: aiosqlite.Connection,
) -> None:
    """The insert trigger reads the new job's pictures through the view: each branch finds the
    job by its key (a shared, materialized CTE would read every job at every insert)."""
    plan = [
        str(row[3])
        for row in await conn.execute_fetchall(
            "EXPLAIN QUERY PLAN SELECT path FROM job_request_inputs WHERE job_id = 'a'"
        )
    ]
    jobs_read = [step for step in plan if " jobs" in step]
    assert len(jobs_read) == 4 and all(step.startswith("SEARCH jobs") for step in jobs_read), plan


QUIET, BUSY, EMPTY = 51, 52, 53


async def finished_jobs(conn: aiosqlite.Connection, channel: int, numbers: range) -> None:
    """Done jobs of one picture each in ``channel`` of server 5, finished at their numbers."""
    request = RenderRequest("a lighthouse", seed=1, steps=2).to_json()
    for number in numbers:
        job_id = f"{channel}-{number:05}"
        await journal.insert_job(
            conn, journal.NewJob(job_id, "imagine", 7, 5, channel, request, 0.0)
        )
        image = journal.ImageRecord(job_id, 0, 1, f"/images/{job_id}.png", "", 8, 8)
        await journal.mark_done(conn, job_id, [image], 0.1, float(number))


async def gallery_steps(conn: aiosqlite.Connection) -> tuple[int, list[str]]:
    """The SQLite instructions (in tens) the gallery of the quiet channel and the empty
    one takes, and the jobs it shows."""
    steps, pictures = await instructions_of(
        conn, dashboard.recent_pictures(conn, 5, [QUIET, EMPTY], 60)
    )
    return steps, [picture.job_id for picture in pictures]


async def test_the_gallery_of_channels_with_few_pictures_reads_those_not_the_servers_all(
    conn: aiosqlite.Connection,
) -> None:
    """An admin who may read only channels with few or no pictures: their gallery walked the
    server's every shown job, newest first, looking for theirs (31 ms at 80,000 jobs)."""
    await finished_jobs(conn, QUIET, range(2))
    await finished_jobs(conn, BUSY, range(10, 110))
    few, shown = await gallery_steps(conn)
    assert shown == ["51-00001", "51-00000"]
    await finished_jobs(conn, BUSY, range(110, 2_000))
    many, shown = await gallery_steps(conn)
    assert shown == ["51-00001", "51-00000"]
    assert many <= few * 1.5


async def test_the_gallery_of_channels_with_many_old_pictures_reads_those_channels_newest(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels holding more of the server's jobs than are read whole, all older than the
    rest: the gallery walked the server's every newer job (23 ms at 80,000); now a window of
    its newest, then each chosen channel's newest."""
    monkeypatch.setattr(dashboard, "_GALLERY_SORTED_WHOLE", 10)
    monkeypatch.setattr(dashboard, "_GALLERY_NEWEST_WINDOW", 20)
    await finished_jobs(conn, QUIET, range(12))
    await finished_jobs(conn, BUSY, range(100, 200))
    few, shown = await gallery_steps(conn)
    newest_first = [f"51-{number:05}" for number in reversed(range(12))]
    assert shown == newest_first
    await finished_jobs(conn, BUSY, range(200, 2_000))
    many, shown = await gallery_steps(conn)
    assert shown == newest_first
    assert many <= few * 1.5
