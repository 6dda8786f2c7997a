"""The broker chores of ended jobs (``bot.jobs.queue.broker_chores``): done once the broker
answers, tried a bounded number of times when it refuses, dropped once the broker's copies
expired; one log line per change, not per try."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue
from bot.jobs.queue import broker_chores as chores_module
from bot.jobs.queue import job_queue as job_queue_module
from bot.jobs.queue.broker_chores import CHORE_TRIES, BrokerChores
from db import broker_chores
from db.broker_chores import OwedChore
from tests.conftest import ErrorLogs

KEPT_S = 3600.0
NOW = 1_000_000.0


class FakeBroker:
    """A ``JobCopies`` that answers when ``answers`` and refuses each settle when ``refuses``."""

    kept_s = KEPT_S

    def __init__(self, *, answers: bool = True, refuses: bool = False) -> None:
        self.answers = answers
        self.refuses = refuses
        self.asked = 0
        self.settles: list[tuple[str, str]] = []
        # Each call, in order: ("settle", job id) or ("drop", the job ids whose messages).
        self.calls: list[tuple[str, object]] = []
        # When given, a settle waits until it is set (and says it began by ``settling``).
        self.held: asyncio.Event | None = None
        self.settling = asyncio.Event()

    async def reachable(self) -> bool:
        self.asked += 1
        return self.answers

    async def settle(self, job_id: str, outcome: str) -> None:
        self.settles.append((job_id, outcome))
        self.calls.append(("settle", job_id))
        if self.held is not None:
            self.settling.set()
            await self.held.wait()
        if self.refuses:
            raise RuntimeError("refused")

    async def drop_job_messages(self, job_ids: Collection[str]) -> None:
        self.calls.append(("drop", sorted(job_ids)))

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        raise AssertionError("not a chore")


async def wait_until_none_owed(conn: aiosqlite.Connection) -> None:
    async with asyncio.timeout(10):
        while await broker_chores.owed(conn):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == chores_module.__name__]


async def test_a_chore_waits_for_the_broker_and_says_so_once(
    conn: aiosqlite.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await broker_chores.owe(conn, "job-a", "cancelled", NOW)
    broker = FakeBroker(answers=False)
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    with caplog.at_level(logging.INFO, logger=chores_module.__name__):
        chores.start()
        async with asyncio.timeout(10):
            while broker.asked < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert broker.settles == []
        broker.answers = True
        await wait_until_none_owed(conn)
        await chores.stop(5.0)
    assert broker.settles == [("job-a", "cancelled")]
    away, back = messages(caplog)
    assert away.startswith("the broker does not answer: 1 ended job(s)")
    assert back.startswith("the broker answers again")


async def test_a_chore_the_broker_refuses_is_given_up_after_its_last_try(
    conn: aiosqlite.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    monkeypatch.setattr(chores_module, "REFUSED_RETRY_WAITS_S", (0.001, 0.004))
    error_logs.expect(r"^job job-b: its copies on the broker were refused \d+ times")
    await broker_chores.owe(conn, "job-b", "done", NOW)
    broker = FakeBroker(refuses=True)
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    with caplog.at_level(logging.INFO, logger=chores_module.__name__):
        chores.start()
        await wait_until_none_owed(conn)
        await chores.stop(5.0)
    assert broker.settles == [("job-b", "done")] * CHORE_TRIES
    not_settled, given_up = messages(caplog)
    assert not_settled.startswith("job job-b: its copies on the broker were not settled")
    assert given_up.startswith(f"job job-b: its copies on the broker were refused {CHORE_TRIES}")


async def test_a_chore_older_than_the_brokers_copies_is_dropped_without_asking_it(
    conn: aiosqlite.Connection,
) -> None:
    await broker_chores.owe(conn, "job-c", "failed", NOW - KEPT_S - 1)
    broker = FakeBroker(answers=False)
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    chores.start()
    await wait_until_none_owed(conn)
    await chores.stop(5.0)
    assert broker.settles == [] and broker.asked == 0


async def test_the_messages_of_a_rounds_cancelled_jobs_are_looked_for_once_after_settling(
    conn: aiosqlite.Connection,
) -> None:
    for job_id, outcome in (("job-a", "cancelled"), ("job-b", "done"), ("job-c", "cancelled")):
        await broker_chores.owe(conn, job_id, outcome, NOW)
    broker = FakeBroker()
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    chores.start()
    await wait_until_none_owed(conn)
    await chores.stop(5.0)
    # Each decision is kept (a worker handed the job does not render it) before the message
    # goes; one read of the jobs stream for both.
    assert broker.calls == [
        ("settle", "job-a"),
        ("settle", "job-b"),
        ("settle", "job-c"),
        ("drop", ["job-a", "job-c"]),
    ]


async def test_a_stop_during_a_round_does_the_chores_owed_meanwhile(
    conn: aiosqlite.Connection,
) -> None:
    await broker_chores.owe(conn, "job-a", "done", NOW)
    broker = FakeBroker()
    broker.held = asyncio.Event()
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    chores.start()
    async with asyncio.timeout(10):
        await broker.settling.wait()
    await broker_chores.owe(conn, "job-b", "failed", NOW)  # ends as job-a is settled
    chores.owed()
    stopped = asyncio.create_task(chores.stop(10.0))
    await asyncio.sleep(0)  # the stop is asked while job-a's settle is under way
    broker.held.set()
    await stopped
    assert broker.settles == [("job-a", "done"), ("job-b", "failed")]
    assert await broker_chores.owed(conn) == []


async def test_a_round_the_database_refused_is_tried_again_without_a_job_ending(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch, error_logs: ErrorLogs
) -> None:
    error_logs.expect(r"^the broker chores of ended jobs failed$")
    await broker_chores.owe(conn, "job-d", "done", NOW)
    refusals = iter([aiosqlite.OperationalError("database is locked")])
    read_owed = broker_chores.owed

    async def owed_after_refusals(connection: aiosqlite.Connection) -> list[OwedChore]:
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        return await read_owed(connection)

    monkeypatch.setattr(chores_module.broker_chores, "owed", owed_after_refusals)
    broker = FakeBroker()
    chores = BrokerChores(conn, broker, lambda: NOW, (0.01, 0.02))
    chores.start()
    async with asyncio.timeout(10):
        while not broker.settles:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await chores.stop(5.0)
    assert broker.settles == [("job-d", "done")]


async def test_at_a_stop_the_chores_get_what_the_posts_left_of_their_grace(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renders, posts and chores together stay within SIGTERM's bound: the chores share the
    posts' grace rather than getting one more."""
    monkeypatch.setattr(job_queue_module, "SHUTDOWN_GRACE_S", 0.05)

    async def posts_taking_their_whole_grace(queue: JobQueue, grace_s: float) -> None:
        await asyncio.sleep(grace_s)

    graces: list[float] = []

    async def chores_stop(chores: BrokerChores, grace_s: float) -> None:
        graces.append(grace_s)

    monkeypatch.setattr(JobQueue, "_settle_background", posts_taking_their_whole_grace)
    monkeypatch.setattr(BrokerChores, "stop", chores_stop)
    queue = JobQueue(conn, [], tmp_path / "images", copies=FakeBroker())
    await queue.start()
    await queue.stop()
    assert graces == [pytest.approx(0.0, abs=1e-6)]
