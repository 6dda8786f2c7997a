"""Jobs of the same second come back from the journal in the order they were journaled (a
restart restores a queue, and its undelivered results, in that order); the dashboard's gallery
keeps the pictures of jobs that ended in the same second together. Real SQLite."""

from __future__ import annotations

import aiosqlite

from db import dashboard
from db import jobs as journal
from inference.types import RenderRequest

SAME_SECOND = 1_800_000_000.0
# Journaled in this order, which neither their ids nor their times give.
JOURNALED = ("c" * 16, "a" * 16, "b" * 16)


async def test_jobs_of_the_same_second_come_back_in_the_order_they_were_journaled(
    conn: aiosqlite.Connection,
) -> None:
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    for job_id in JOURNALED:
        new = journal.NewJob(job_id, "imagine", 7, 5, 50, request, SAME_SECOND)
        await journal.insert_job(conn, new)
    # Not asserted here: ``jobs_with_status`` and ``unfinished_jobs_of`` (an index, jobs_status
    # or jobs_user, gives their ties in rowid order even without the tie-break; no test can
    # tell the two apart, docs/security.md).
    # Ended together in three statuses: the status index alone groups them by status.
    failed, done, cancelled = JOURNALED
    await journal.mark_failed(conn, failed, "failed", SAME_SECOND + 1)
    await journal.mark_done(conn, done, [], 0.1, SAME_SECOND + 1)
    await journal.mark_failed(conn, cancelled, "cancelled", SAME_SECOND + 1, cancelled=True)
    undelivered = await journal.finished_undelivered(conn)
    assert tuple(job.id for job in undelivered) == JOURNALED


async def test_the_gallery_keeps_each_jobs_pictures_together_when_jobs_end_together(
    conn: aiosqlite.Connection,
) -> None:
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    for job_id in JOURNALED[:2]:
        await journal.insert_job(
            conn, journal.NewJob(job_id, "imagine", 7, 5, 50, request, SAME_SECOND)
        )
        pictures = [
            journal.ImageRecord(job_id, idx, idx, f"/x/{job_id}-{idx}.png", "", 8, 8)
            for idx in range(2)
        ]
        await journal.mark_done(conn, job_id, pictures, 0.1, SAME_SECOND + 1)
    gallery = await dashboard.recent_pictures(conn, 5, [50], limit=3)
    # The newest job (journaled last) first, each job's pictures in their order.
    assert [(picture.job_id, picture.idx) for picture in gallery] == [
        (JOURNALED[1], 0),
        (JOURNALED[1], 1),
        (JOURNALED[0], 0),
    ]
