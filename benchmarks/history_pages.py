"""/history's pages on a member with many jobs: the first, a middle and the last page, read by
number (OFFSET: each job before the page is read) and turned to from the page beside it (keyset:
``History.page``'s ``next_to``).

    python benchmarks/history_pages.py [--jobs 30000] [--repeats 5] [--scratch DIR]

Fills a fresh database file (a temporary folder, inside ``--scratch`` if given) through the
journal's own ``insert_job``: ``--jobs`` done jobs of one member in one server, a second apart,
each with a prompt of about 200 characters, and as many of other members (so the member's rows
are spread through the table as a busy server's are). Then times ``History.page`` (its count
and its page read, as /history and a page button run them), each page ``--repeats`` times;
prints one JSON object of the median ms per page and way. Compare the ways of one run, not
absolute times across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.history import PAGE_SIZE, History, PageAnchor
from bot.policy.member_settings import MemberSettings
from db import jobs as journal
from db.database import connect, transaction

MEMBER, OTHERS, GUILD = 1, 2, 10
FILL_CHUNK = 2000  # jobs journaled per transaction while filling
PROMPT = "a watercolour of a lighthouse on a cliff at dusk, gulls, long shadows, " * 3


async def fill(history_file: Path, jobs: int) -> None:
    """Journal ``jobs`` done jobs of ``MEMBER`` and as many of other members, interleaved."""
    conn = await connect(history_file)
    try:
        for start in range(0, jobs, FILL_CHUNK):
            async with transaction(conn):
                for index in range(start, min(start + FILL_CHUNK, jobs)):
                    for user_id in (MEMBER, OTHERS + index % 50):
                        job_id = f"{user_id:04x}{index:012x}"
                        request = json.dumps({"prompt": f"{PROMPT}{index}"})
                        await journal.insert_job(
                            conn,
                            journal.NewJob(job_id, "imagine", user_id, GUILD, 20, request, index),
                        )
            await conn.execute(
                "UPDATE jobs SET status = 'done' WHERE status = 'queued' AND created_at >= ?",
                (start,),
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def main(arguments: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=arguments.scratch) as scratch:
        history_file = Path(scratch) / "easel.sqlite3"
        await fill(history_file, arguments.jobs)
        conn = await connect(history_file)
        try:
            history = History(
                conn, Path(scratch) / "images", Path(scratch) / "inputs", MemberSettings(conn)
            )
            last = -(-arguments.jobs // PAGE_SIZE) - 1
            results: dict[str, object] = {"jobs": arguments.jobs, "pages": last + 1}
            for name, number in (("first", 0), ("middle", last // 2), ("last", last)):
                beside = await history.page(MEMBER, max(number - 1, 0), guild_id=GUILD)
                anchor = None if number == 0 else PageAnchor(beside.lines[-1].job_id, older=True)
                timings: dict[str, list[float]] = {"by_number": [], "turned_to": []}
                for _ in range(arguments.repeats):
                    for way, next_to in (("by_number", None), ("turned_to", anchor)):
                        began = time.perf_counter()
                        page = await history.page(MEMBER, number, guild_id=GUILD, next_to=next_to)
                        timings[way].append((time.perf_counter() - began) * 1000)
                        assert page.page == number and page.lines, (way, page.page)
                results[name] = {
                    way: round(statistics.median(ms), 1) for way, ms in timings.items()
                }
            return results
        finally:
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=None)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
