"""Migration 0023 writes the pictures each job already journaled reads into ``job_inputs``,
and every job journaled after it gets its rows as it is written. Real SQLite files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from db import jobs as journal
from db.database import connect, load_migrations

BEFORE_JOB_INPUTS = 22


async def test_the_jobs_journaled_before_keep_their_inputs(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    with sqlite3.connect(path) as raw:
        for migration in load_migrations()[:BEFORE_JOB_INPUTS]:
            raw.executescript(migration.sql)
        raw.execute(f"PRAGMA user_version = {BEFORE_JOB_INPUTS}")
        request = {
            "prompt": "a barn",
            "init_image": "/data/inputs/init.png",
            "mask_image": "/data/images/old/0.png",
            "options": {
                "controlnet": [{"image": "/data/inputs/pose.png"}, {"module": "none"}],
                "ipadapter": {"images": ["/data/inputs/style.png", "/data/inputs/init.png"]},
            },
        }
        # Odd rows no writer makes read as no picture, and stop nothing.
        odd = (
            ("d", "not json"),
            ("e", json.dumps({"options": {"controlnet": {"image": "/x.png"}}})),
            ("f", json.dumps({"options": {"controlnet": ["/x.png", 3]}})),
        )
        for job_id, text in (
            ("a", json.dumps(request)),
            ("b", json.dumps({"prompt": "a cat"})),
            *odd,
        ):
            raw.execute(
                "INSERT INTO jobs (id, kind, user_id, request_json, created_at)"
                " VALUES (?, 'vary', 7, ?, 0)",
                (job_id, text),
            )
    conn = await connect(path)
    try:
        rows = await conn.execute_fetchall("SELECT job_id, path FROM job_inputs ORDER BY path")
        # As 0033 names them after: uploads by their path inside the data folder (a picture
        # not in images/<16 hex digits>/ as it was).
        assert [tuple(row) for row in rows] == [
            ("a", "/data/images/old/0.png"),
            ("a", "inputs/init.png"),
            ("a", "inputs/pose.png"),
            ("a", "inputs/style.png"),
        ]
        new = journal.NewJob("c", "vary", 8, 5, 50, json.dumps(request), 1.0)
        await journal.insert_job(conn, new)
        assert len(await conn.execute_fetchall("SELECT 1 FROM job_inputs WHERE job_id = 'c'")) == 4
        await conn.execute("DELETE FROM jobs WHERE id = 'a'")
        assert await journal.input_picture_paths(conn) == {
            "/data/images/old/0.png",
            "/data/inputs/init.png",
            "/data/inputs/pose.png",
            "/data/inputs/style.png",
        }
        assert not await conn.execute_fetchall("SELECT 1 FROM job_inputs WHERE job_id = 'a'")
    finally:
        await conn.close()
