"""What one dashboard poll costs the database for its gallery: the app's own two queries
(``db.dashboard.picture_channels``, the channels pictures were made in, then
``db.dashboard.recent_pictures``, the newest of those the admin may read), without and with
migration 0011's indexes.

    python benchmarks/dashboard_poll.py [--jobs 100000] [--channels 200]

One server, one picture a job, half the channels readable; mean of 20 runs after one warm-up.
Prints one JSON object. Seeds the database with bulk SQL (a benchmark's shortcut; Easel's own
SQL stays in db/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosqlite

from db import dashboard as queries
from db.database import connect

GUILD = 1
RUNS = 20


async def _seed(conn: aiosqlite.Connection, jobs: int, channels: int) -> None:
    rng = random.Random(1)
    rows = [
        (f"{n:016x}", GUILD, 1000 + rng.randrange(channels), json.dumps({"prompt": "a kite"}), n)
        for n in range(jobs)
    ]
    await conn.executemany(
        "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
        " created_at, finished_at) VALUES (?, 'imagine', 'done', 7, ?, ?, ?, ?, ? + 1)",
        [(*row, row[-1]) for row in rows],
    )
    await conn.executemany(
        "INSERT INTO images (job_id, idx, seed, path, infotext, width, height)"
        " VALUES (?, 0, 1, ?, '', 64, 64)",
        [(r[0], f"/{r[0]}.png") for r in rows],
    )
    await conn.commit()


async def _mean_ms(call: Callable[[], Awaitable[Any]]) -> float:
    await call()
    start = time.perf_counter()
    for _ in range(RUNS):
        await call()
    return (time.perf_counter() - start) / RUNS * 1000


async def measure(jobs: int, channels: int, with_indexes: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        conn = await connect(Path(folder) / "easel.sqlite")
        try:
            if not with_indexes:
                await conn.execute("DROP INDEX jobs_shown_channels")
                await conn.execute("DROP INDEX jobs_shown_newest")
            await _seed(conn, jobs, channels)
            readable = {1000 + channel for channel in range(0, channels, 2)}

            async def channels() -> None:
                await queries.picture_channels(conn, GUILD)

            async def gallery() -> None:
                await queries.recent_pictures(conn, GUILD, readable, 24)

            return {
                "channels_ms": await _mean_ms(channels),
                "gallery_ms": await _mean_ms(gallery),
            }
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=200)
    options = parser.parse_args()
    report: dict[str, Any] = {"jobs": options.jobs, "channels": options.channels}
    for with_indexes in (False, True):
        label = "with_0011" if with_indexes else "without_0011"
        report[label] = await measure(options.jobs, options.channels, with_indexes)
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
