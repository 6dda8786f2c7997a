"""kill -9 the bot with jobs queued and running; a new bot finishes each one exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.distributed.nats_server import (
    PROCESS_WAIT_S,
    NatsServer,
    python_process,
    read_until,
)

JOBS = 6


def ledger_rows(db: Path) -> Counter[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return Counter(conn.execute("SELECT job_id, kind FROM quota_ledger").fetchall())


def undelivered(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE delivered_at IS NULL").fetchone()
    return int(count)


@pytest.mark.parametrize("broker", [False, True], ids=["in-process", "nats"])
async def test_a_killed_bot_finishes_every_job_once_after_a_restart(
    tmp_path: Path, broker: bool
) -> None:
    db, posted = tmp_path / "easel.sqlite3", tmp_path / "posted.txt"
    bot_args = ["-m", "tests.crash.queue_main", str(db), str(tmp_path / "images"), str(posted)]
    bot_args += ["--seconds", "0.25"]
    server = worker = None
    if broker:
        server = NatsServer(tmp_path / "jetstream")
        server.start()
        worker = await python_process(
            "-m", "tests.distributed.worker_main", server.url, "--seconds", "0.25"
        )
        await read_until(worker, "serving", PROCESS_WAIT_S)
        bot_args += ["--queue-url", server.url]
    try:
        bot = await python_process(*bot_args, "--submit", str(JOBS))
        submitted = [
            (await read_until(bot, "submitted", PROCESS_WAIT_S)).split()[1] for _ in range(JOBS)
        ]
        await read_until(bot, "posted", PROCESS_WAIT_S)
        bot.kill()
        await bot.wait()
        assert undelivered(db) > 0  # the kill left work behind

        restarted = await python_process(*bot_args)
        async with asyncio.timeout(PROCESS_WAIT_S):
            assert await restarted.wait() == 0

        lines = posted.read_text().splitlines()
        assert sorted(lines) == sorted(f"{job_id} done" for job_id in submitted)  # each once
        ledger = ledger_rows(db)
        for job_id in submitted:
            assert ledger[job_id, "reserve"] == ledger[job_id, "commit"] == 1
            assert ledger[job_id, "refund"] == 0
        if worker is not None:
            worker.terminate()
            output = (await worker.communicate())[0].decode()
            starts = Counter(
                line.split()[1].rstrip(":") for line in output.splitlines() if "started on" in line
            )
            # On the broker the jobs kept running while the bot was dead: none ran twice.
            assert starts == dict.fromkeys(submitted, 1)
    finally:
        if worker is not None and worker.returncode is None:
            worker.kill()
            await worker.wait()
        if server is not None:
            server.stop()
