"""A job made from a picture (a Vary or 🔄 click admitted while it was still shown) that is
journaled just after a moderator deleted that picture is withdrawn with it, though the
withdrawal ran before the job existed: it ends before it renders, refunded, posted nowhere,
its maker told why. Real SQLite, the real queue, policy and ``DiscordResults``."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from db import jobs as journal
from db import quotas as ledger
from db.history import withdraw_deleted_results
from tests.integration.test_delivery_gate import (
    REFUNDED,
    SOURCE,
    SOURCE_POST,
    FakeDiscord,
    all_delivered,
    results_for,
    spent_today,
    started,
    submission,
)
from tests.integration.test_withdrawn_results import CHANNEL, GUILD, NOW, delivered
from tests.support.engines import InstantEngine


async def test_a_job_journaled_after_its_source_was_withdrawn_is_withheld_unrendered(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    await delivered(conn, SOURCE, SOURCE_POST)
    fake, engine = FakeDiscord(), InstantEngine()
    queue = await started(conn, engine, tmp_path / "images", results_for(conn, fake))
    try:
        # The click passed its "still shown" check; the deletion's withdrawal runs before its
        # job is journaled, so it cannot name it.
        assert await withdraw_deleted_results(conn, GUILD, CHANNEL, [SOURCE_POST], NOW + 1)
        job_id = await queue.submit(submission("vary", parent=SOURCE))
        await all_delivered(conn, [job_id])
    finally:
        await queue.stop()
    assert engine.batches == []  # no GPU time
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.withdrawn_at == NOW + 1
    assert job.status is journal.JobStatus.CANCELLED
    assert await spent_today(conn) == ledger.Usage(images=0, gpu_seconds=0.0)
    assert fake.channel.messages == []
    notice = (
        f"Your job `{job_id}` in Guild was not posted: a moderator removed the picture it was "
        f"made from. {REFUNDED}"
    )
    assert fake.direct.messages == [(notice, [])]
