"""db.quotas on a real SQLite file: idempotent reserve/commit/refund, usage, limit overrides."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.database import connect, transaction
from db.quotas import (
    LedgerError,
    LimitScope,
    Usage,
    clear_limits,
    commit,
    get_limits,
    overrides_for,
    refund,
    reserve,
    set_limits,
    usage,
)

# (who, where) of each job in the random scenarios: two users, a guild and DMs.
OWNERS = [(1, 10), (1, None), (2, 10)]


@dataclass
class ModelJob:
    """What the ledger should say about one job."""

    user: int
    guild: int | None
    reserved_at: float
    images: int
    gpu_seconds: float
    state: str = "reserved"  # then "committed" or "refunded"


Step = tuple[str, int, int, float]  # (operation, job number, images, gpu seconds)
steps = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "commit", "refund", "restart"]),
        st.integers(0, 5),
        st.integers(0, 4),
        st.floats(0, 100, allow_nan=False).map(lambda value: round(value, 2)),
    ),
    max_size=30,
)


async def play(path: Path, scenario: list[Step]) -> None:
    model: dict[int, ModelJob] = {}
    conn = await connect(path)
    try:
        for now, (operation, number, images, seconds) in enumerate(scenario):
            job_id = f"job-{number}"
            known = model.get(number)
            if operation == "restart":  # a new process: nothing survives but the file
                await conn.close()
                conn = await connect(path)
            elif operation == "reserve":
                user, guild = OWNERS[number % len(OWNERS)]
                fresh = await reserve(conn, job_id, user, guild, images, seconds, float(now))
                assert fresh == (known is None)
                if known is None:
                    model[number] = ModelJob(user, guild, float(now), images, seconds)
            elif operation == "commit":
                if known is None or known.state == "refunded":
                    with pytest.raises(LedgerError):
                        await commit(conn, job_id, seconds, float(now))
                else:
                    charged = await commit(conn, job_id, seconds, float(now))
                    assert (charged is not None) == (known.state == "reserved")
                    if known.state == "reserved":
                        # A reservation at no cost (a relax job) is charged nothing.
                        free = known.images == 0 and known.gpu_seconds == 0
                        seconds = 0.0 if free else seconds
                        assert charged == Usage(known.images, seconds)
                        known.state, known.gpu_seconds = "committed", seconds
            elif known is None or known.state == "committed":
                with pytest.raises(LedgerError):
                    await refund(conn, job_id, float(now))
            else:
                assert await refund(conn, job_id, float(now)) == (known.state == "reserved")
                known.state = "refunded"

        for since in (0.0, len(scenario) / 2):  # everything, and a later period's share
            for user, guild in set(OWNERS):
                charged = [
                    job
                    for job in model.values()
                    if (job.user, job.guild) == (user, guild)
                    and job.state != "refunded"
                    and job.reserved_at >= since
                ]
                got = await usage(conn, user, guild, since)
                assert got.images == sum(job.images for job in charged)
                assert got.gpu_seconds == pytest.approx(sum(job.gpu_seconds for job in charged))
    finally:
        await conn.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_ledger_matches_a_model_across_restarts_and_redelivery(
    tmp_path: Path, scenario: list[Step]
) -> None:
    asyncio.run(play(tmp_path / f"{uuid.uuid4().hex}.db", scenario))


async def test_commit_replaces_the_estimate_and_refund_releases_it(
    conn: aiosqlite.Connection,
) -> None:
    assert await reserve(conn, "a", 1, 10, 4, 40.0, 100.0)
    assert await reserve(conn, "b", 1, 10, 2, 20.0, 101.0)
    assert await usage(conn, 1, 10, 0.0) == Usage(6, 60.0)
    assert await commit(conn, "a", 12.5, 150.0, images=3)
    assert await refund(conn, "b", 151.0)
    assert await usage(conn, 1, 10, 0.0) == Usage(3, 12.5)
    # A job counts in the period it was reserved in, whenever it finished.
    assert await usage(conn, 1, 10, 100.5) == Usage(0, 0.0)
    assert await usage(conn, 1, None, 0.0) == Usage(0, 0.0)  # DMs are counted apart


async def test_contradicting_steps_are_refused_with_a_reason(conn: aiosqlite.Connection) -> None:
    await reserve(conn, "a", 1, 10, 1, 5.0, 0.0)
    await commit(conn, "a", 4.0, 1.0)
    with pytest.raises(LedgerError, match="job a was already committed; it cannot be refunded"):
        await refund(conn, "a", 2.0)
    with pytest.raises(LedgerError, match="job ghost has no reservation to commit"):
        await commit(conn, "ghost", 1.0, 2.0)
    with pytest.raises(ValueError, match="must be 0 or more"):
        await reserve(conn, "b", 1, 10, -1, 5.0, 0.0)


async def test_reserve_joins_the_callers_transaction(conn: aiosqlite.Connection) -> None:
    with pytest.raises(RuntimeError, match="journal failed"):
        async with transaction(conn):
            await reserve(conn, "a", 1, 10, 1, 5.0, 0.0)
            raise RuntimeError("journal failed")
    assert await usage(conn, 1, 10, 0.0) == Usage(0, 0.0)


async def test_limit_overrides_round_trip(conn: aiosqlite.Connection) -> None:
    guild = 10
    await set_limits(conn, LimitScope.GUILD, guild, guild, {"images_per_day": 20}, 0.0)
    await set_limits(conn, LimitScope.ROLE, guild, 501, {"images_per_day": 50}, 0.0)
    await set_limits(conn, LimitScope.ROLE, guild, 502, {"gpu_seconds_per_week": 9.5}, 0.0)
    await set_limits(conn, LimitScope.ROLE, guild, 503, {"images_per_day": 999}, 0.0)
    await set_limits(conn, LimitScope.USER, guild, 7, {"images_per_day": 1}, 0.0)
    await set_limits(conn, LimitScope.USER, guild, 7, {"images_per_day": 2}, 1.0)  # replaces

    stored = await get_limits(conn, LimitScope.USER, guild, 7)
    assert stored is not None and stored["images_per_day"] == 2
    assert stored["images_per_week"] is None

    found = await overrides_for(conn, guild, 7, [502, 501])
    assert found.user == stored
    assert [role["images_per_day"] for role in found.roles] == [50, None]
    assert found.guild is not None and found.guild["images_per_day"] == 20

    assert await clear_limits(conn, LimitScope.USER, guild, 7)
    assert not await clear_limits(conn, LimitScope.USER, guild, 7)
    nobody = await overrides_for(conn, 11, 7, [])
    assert (nobody.user, nobody.roles, nobody.guild) == (None, [], None)


async def test_bad_limits_are_named(conn: aiosqlite.Connection) -> None:
    with pytest.raises(ValueError, match=r"unknown quota limits \['images_per_year'\]"):
        await set_limits(conn, LimitScope.USER, 1, 1, {"images_per_year": 5}, 0.0)
    with pytest.raises(ValueError, match="images_per_day must be 0 or more"):
        await set_limits(conn, LimitScope.USER, 1, 1, {"images_per_day": -5}, 0.0)
