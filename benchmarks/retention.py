"""Retention rounds on a filled database: what each round costs and what it prunes.

    python benchmarks/retention.py [--jobs 50000] [--rounds 4] [--scratch DIR]

Fills a fresh database and data folder (a temporary folder, inside ``--scratch`` if given)
through the journal's own functions: ``--jobs`` delivered jobs whose ends are spread evenly
over the last 30.5 days, a result folder each (one picture), 20 % with an upload of their own,
10 % varying the picture of one of the 5,000 jobs before them. Their files are dated 60 days
back, so only the journal decides what goes. Then ``bot.jobs.retention.Retention`` (30 days)
runs ``--rounds`` rounds, 6 simulated hours apart: the first prunes half a day of jobs and
lists every stored file (a process's first round does), each later one a quarter of a day
(``--jobs`` / 122 jobs) and reads only their files. Prints one JSON object: per round the ms
and what was pruned. Compare rounds of one run, not absolute times across machines; what a
round reads is counted, not timed, in tests/integration/test_retention_reads.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs.retention import PRUNE_INTERVAL_S, Pruned, Retention
from db import jobs as journal
from db.database import connect, transaction

RETENTION_DAYS = 30
DAY_S = 86400.0
SPAN_S = 30.5 * DAY_S  # the jobs' ends: half a day beyond the retention period
FILES_AGE_S = 60 * DAY_S  # older than any grace period: files go as their rows do
UPLOAD_SHARE, VARY_SHARE = 0.2, 0.1
VARIED_WITHIN = 5000  # a varied picture is one of the jobs this many before
FILL_CHUNK = 1000  # jobs journaled per transaction while filling


def _age(path: Path, now: float) -> None:
    os.utime(path, (now - FILES_AGE_S, now - FILES_AGE_S))


async def fill(conn: aiosqlite.Connection, data_dir: Path, jobs: int, now: float) -> None:
    """Journal ``jobs`` delivered jobs and write their files (see the module's docstring)."""
    images, inputs = data_dir / "images", data_dir / "inputs"
    images.mkdir()
    inputs.mkdir()
    rng = random.Random(1)
    job_ids = [f"{index:016x}" for index in range(jobs)]
    for start in range(0, jobs, FILL_CHUNK):
        ends: list[tuple[str, float]] = []
        async with transaction(conn):
            for index in range(start, min(start + FILL_CHUNK, jobs)):
                job_id = job_ids[index]
                finished = now - SPAN_S + SPAN_S * index / jobs
                request: dict[str, object] = {"prompt": "a cat", "count": 1}
                roll = rng.random()
                if roll < UPLOAD_SHARE:
                    upload = inputs / f"{job_id}.png"
                    upload.write_bytes(b"upload")
                    _age(upload, now)
                    request["init_image"] = str(upload)
                elif roll < UPLOAD_SHARE + VARY_SHARE and index > 0:
                    varied = job_ids[rng.randrange(max(0, index - VARIED_WITHIN), index)]
                    request["init_image"] = str(images / varied / "0.png")
                folder = images / job_id
                folder.mkdir()
                picture = folder / "0.png"
                picture.write_bytes(b"picture")
                _age(picture, now)
                _age(folder, now)
                await journal.insert_job(
                    conn,
                    journal.NewJob(
                        job_id, "imagine", 7, 5, 6, json.dumps(request), created_at=finished - 10
                    ),
                )
                await journal.mark_done(
                    conn,
                    job_id,
                    [journal.ImageRecord(job_id, 0, index, str(picture), "", 64, 64)],
                    gpu_seconds=1.0,
                    now=finished,
                )
                ends.append((job_id, finished))
        # After the transaction: mark_delivered waits for its lock (one write each, as the bot's).
        for job_id, finished in ends:
            await journal.mark_delivered(conn, job_id, finished)


async def rounds(
    conn: aiosqlite.Connection, data_dir: Path, count: int, now: float
) -> list[tuple[float, Pruned]]:
    """``count`` retention rounds, ``PRUNE_INTERVAL_S`` apart on a simulated clock: each
    one's ms and what it pruned."""
    clock = now
    retention = Retention(
        conn, data_dir / "images", data_dir / "inputs", RETENTION_DAYS, clock=lambda: clock
    )
    results: list[tuple[float, Pruned]] = []
    for _ in range(count):
        started = time.perf_counter()
        pruned = await retention.prune()
        results.append(((time.perf_counter() - started) * 1000, pruned))
        clock += PRUNE_INTERVAL_S
    return results


async def main(arguments: argparse.Namespace) -> dict[str, object]:
    now = time.time()
    with tempfile.TemporaryDirectory(dir=arguments.scratch) as scratch_name:
        data_dir = Path(scratch_name)
        conn = await connect(data_dir / "easel.sqlite3")
        try:
            started = time.perf_counter()
            await fill(conn, data_dir, arguments.jobs, now)
            fill_s = time.perf_counter() - started
            measured = await rounds(conn, data_dir, arguments.rounds, now)
        finally:
            await conn.close()
    later = [elapsed_ms for elapsed_ms, _ in measured[1:]]
    return {
        "jobs": arguments.jobs,
        "fill_s": round(fill_s, 1),
        "retention_days": RETENTION_DAYS,
        "round_interval_h": PRUNE_INTERVAL_S / 3600,
        "rounds": [
            {
                "round": number,
                "ms": round(elapsed_ms, 1),
                "pruned": {
                    "jobs": pruned.jobs,
                    "pictures": pruned.pictures,
                    "uploads": pruned.uploads,
                },
            }
            for number, (elapsed_ms, pruned) in enumerate(measured, start=1)
        ],
        # The rounds after the first read only what they prune: their typical cost.
        "later_rounds_median_ms": round(statistics.median(later), 1) if later else None,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number (1 or more)")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=positive, default=50_000, help="delivered jobs to fill")
    parser.add_argument("--rounds", type=positive, default=4, help="retention rounds to time")
    parser.add_argument(
        "--scratch", type=Path, help="folder to make the temporary data folder in (default: TMP)"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
