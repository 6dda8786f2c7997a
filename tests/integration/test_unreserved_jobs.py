"""A job with no quota reservation (one queued or running under schema 1, before the ledger
existed; or any other cause) ends as any other: rendered once, delivered, nothing charged or
given back, and the log names it. It was left running, rendered again at every start, its
member never told. The real migration, queue and SQLite file."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from bot.jobs import accounting
from db import jobs as journal
from db.database import connect
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.older_databases import database_at
from tests.support.sinks import started_queue

QUEUED, RUNNING = "0000000000000001", "0000000000000002"


async def test_jobs_journaled_before_the_ledger_are_delivered_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = database_at(tmp_path / "easel.sqlite3", 1)
    request = json.dumps({"prompt": "a cat", "seed": 1, "steps": 2})
    with sqlite3.connect(path, isolation_level=None) as raw:
        for job_id, status in ((QUEUED, "queued"), (RUNNING, "running")):
            raw.execute(
                "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id,"
                " request_json, attempts, created_at) VALUES (?, 'imagine', ?, 7, 5, 9, ?, ?, 0)",
                (job_id, status, request, int(status == "running")),
            )
    conn = await connect(path)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.jobs.accounting"):
            queue, sink = await started_queue(
                conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images"
            )
            await sink.wait_for(2)
            await queue.stop()
        assert {job.job_id: job.succeeded for job in sink.delivered} == {
            QUEUED: True,
            RUNNING: True,
        }
        for job_id in (QUEUED, RUNNING):
            job = await journal.get_job(conn, job_id)
            assert job is not None and job.status is journal.JobStatus.DONE
            assert f"job {job_id}: no quota reservation" in caplog.text
        ledger = await conn.execute_fetchall("SELECT COUNT(*) FROM quota_ledger")
        assert [tuple(row) for row in ledger] == [(0,)]
    finally:
        await conn.close()


async def test_a_refund_of_a_job_never_reserved_gives_nothing_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that fails (or is cancelled) with no reservation ends refunded by nothing."""
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        with caplog.at_level(logging.WARNING, logger="bot.jobs.accounting"):
            await accounting.refund(conn, "ghost", 1.0)
        assert "job ghost: no quota reservation in the ledger, so nothing was refunded" in (
            caplog.text
        )
        ledger = await conn.execute_fetchall("SELECT COUNT(*) FROM quota_ledger")
        assert [tuple(row) for row in ledger] == [(0,)]
    finally:
        await conn.close()
