"""What a withdrawal takes with it, and what a restore brings back, on random histories: chains
of jobs made from others, delivered or not, several pictures shared across channels and
servers, some withdrawn or withheld before; each compared with the rule written out plainly
here (made from a reached job; or, for a moderator's withdrawal, a later job of the same
server with one of its pixels). And the work of withdrawing a picture copied many times grows
with the copies, not with their square. Real SQLite."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import aiosqlite
import pytest

from db import history as store
from db import jobs as journal
from db.jobs import JobRecord
from inference.types import RenderRequest
from tests.support.sqlite_work import instructions_of

NOW = 1_800_000_000.0
GUILD, OTHER_GUILD, ADMIN = 5, 6, 8
CHANNELS = {GUILD: (50, 51), OTHER_GUILD: (60,)}
PICTURES = (b"A" * 32, b"B" * 32, b"C" * 32)


@dataclass
class History:
    """The jobs made, the pixels of each one's pictures and its posts still linked (message
    id: job, guild, channel)."""

    pixels: dict[str, set[bytes]] = field(default_factory=dict)
    posts: dict[int, tuple[str, int, int]] = field(default_factory=dict)


async def random_history(conn: aiosqlite.Connection, rng: random.Random) -> History:
    made = History()
    request = RenderRequest("a lighthouse", seed=1, steps=2).to_json()
    for number in range(rng.randint(8, 30)):
        job_id = f"{number:016x}"
        parent = rng.choice(sorted(made.pixels)) if made.pixels and rng.random() < 0.5 else None
        guild = rng.choice(sorted(CHANNELS))
        channel = rng.choice(CHANNELS[guild])
        kind = rng.choice(("imagine", "upscale", "variation")) if parent else "imagine"
        made_at = NOW + rng.randint(0, 12)  # ties too: a twin is strictly later
        await journal.insert_job(
            conn, journal.NewJob(job_id, kind, 7, guild, channel, request, made_at, parent)
        )
        made.pixels[job_id] = set()
        if rng.random() < 0.2:
            continue  # queued: no picture yet
        pictures = [rng.choice((*PICTURES, None)) for _ in range(rng.randint(1, 2))]
        images = [
            journal.ImageRecord(job_id, index, 1, f"/images/{job_id}-{index}.png", "", 8, 8, digest)
            for index, digest in enumerate(pictures)
        ]
        await journal.mark_done(conn, job_id, images, 0.1, NOW)
        made.pixels[job_id] = {digest for digest in pictures if digest is not None}
        if rng.random() < 0.7:
            message_id = 1000 + number
            await journal.record_job_message(conn, job_id, message_id, posted_in=(guild, channel))
            made.posts[message_id] = (job_id, guild, channel)
            await journal.mark_delivered(conn, job_id, NOW)
    return made


def reached(
    jobs: dict[str, JobRecord],
    made: History,
    first: Collection[str],
    made_from: Callable[[JobRecord], bool],
    twin: Callable[[JobRecord], bool] | None,
) -> set[str]:
    """``first`` and every job made from a reached one meeting ``made_from`` or, unless
    ``twin`` is None, made later in its server with one of its pixels and meeting ``twin``."""
    found, waiting = set(first), list(first)
    while waiting:
        mine = jobs.get(waiting.pop())
        if mine is None:
            continue
        for job in jobs.values():
            carried = job.parent_job_id == mine.id and made_from(job)
            carried = carried or (
                twin is not None
                and twin(job)
                and mine.guild_id is not None
                and job.guild_id == mine.guild_id
                and job.created_at > mine.created_at
                and bool(made.pixels[job.id] & made.pixels[mine.id])
            )
            if carried and job.id not in found:
                found.add(job.id)
                waiting.append(job.id)
    return found


def posted_or_unfinished(job: JobRecord) -> bool:
    return job.kind == "upscale" or job.delivered_at is None


async def random_step(
    conn: aiosqlite.Connection, made: History, rng: random.Random, now: float
) -> tuple[set[str], Awaitable[list[str]]]:
    """A random withdrawal or restore: the jobs the rule says it returns, and the call (the
    posts it unlinks are no longer ``made``'s)."""
    jobs = {job_id: await journal.get_job(conn, job_id) for job_id in made.pixels}
    known = {job_id: job for job_id, job in jobs.items() if job is not None}
    step = rng.choice(("withdraw", "withhold", "deleted posts", "deleted channel", "restore"))
    withdrawn = sorted(job_id for job_id, job in known.items() if job.withdrawn_at is not None)
    if step == "restore" and withdrawn and rng.random() < 0.8:
        job_id = rng.choice(withdrawn)
    else:
        job_id = rng.choice(sorted(known))
    job = known[job_id]
    if step == "restore":
        guild = rng.choice(sorted(CHANNELS))  # now and then another server's
        call = store.restore_job(
            conn, job_id, guild, admin_id=ADMIN, now=now, describe="{} {}".format
        )
        if job.withdrawn_at is None or job.guild_id != guild:
            return set(), call
        at = job.withdrawn_at
        back = reached(
            known,
            made,
            [job_id],
            lambda other: other.withdrawn_at == at and other.guild_id == guild,
            lambda other: (
                other.withdrawn_at == at and other.guild_id == guild and other.withheld_why is None
            ),
        )
        return back, call
    guild = job.guild_id or GUILD
    channel = rng.choice(CHANNELS[guild])
    if step in ("withdraw", "withhold"):
        first = [job_id]
        twins = step == "withdraw" and not job.withdrawn_with_channel
        call = store.withdraw_job(
            conn, job_id, now, withheld_why=None if step == "withdraw" else "withheld"
        )
    elif step == "deleted posts":
        deleted = rng.sample(sorted(made.posts), min(len(made.posts), rng.randint(1, 3)))
        first = [made.posts[m][0] for m in deleted if made.posts[m][1:] == (guild, channel)]
        made.posts = {
            m: post
            for m, post in made.posts.items()
            if m not in deleted or post[1:] != (guild, channel)
        }
        twins = True
        call = store.withdraw_deleted_results(conn, guild, channel, deleted, now)
    else:
        first = [posted for posted, *where in made.posts.values() if where == [guild, channel]]
        first += [
            other.id
            for other in known.values()
            if (other.guild_id, other.channel_id) == (guild, channel) and other.delivered_at is None
        ]
        made.posts = {m: post for m, post in made.posts.items() if post[1:] != (guild, channel)}
        twins = False
        call = store.withdraw_channel_results(conn, guild, channel, now)
    gone = reached(known, made, first, posted_or_unfinished, (lambda _: True) if twins else None)
    newly = {other for other in gone if other in known and known[other].withdrawn_at is None}
    return newly, call


@pytest.mark.parametrize("seed", range(40))
async def test_a_withdrawal_and_a_restore_reach_the_jobs_the_rule_names(
    conn: aiosqlite.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    made = await random_history(conn, rng)
    for moment in range(8):
        expected, call = await random_step(conn, made, rng, NOW + 100 + moment)
        assert set(await call) == expected


async def made_job(
    conn: aiosqlite.Connection,
    job_id: str,
    made_at: float,
    pictures: Collection[bytes],
    *,
    made_from: str | None = None,
    delivered: bool = True,
) -> None:
    """A done job of ``GUILD`` with one picture of each of ``pictures``' pixels."""
    request = RenderRequest("a lighthouse", seed=1, steps=2).to_json()
    kind = "imagine" if made_from is None else "variation"
    await journal.insert_job(
        conn, journal.NewJob(job_id, kind, 7, GUILD, 50, request, made_at, made_from)
    )
    images = [
        journal.ImageRecord(job_id, index, 1, f"/images/{job_id}-{index}.png", "", 8, 8, digest)
        for index, digest in enumerate(pictures)
    ]
    await journal.mark_done(conn, job_id, images, 0.1, NOW)
    if delivered:
        await journal.mark_delivered(conn, job_id, NOW)


async def withdrawal_steps(conn: aiosqlite.Connection, job_id: str, reaching: int) -> int:
    """The SQLite instructions (in hundreds) withdrawing ``job_id`` takes; ``reaching`` jobs
    go."""
    steps, withdrawn = await instructions_of(
        conn, store.withdraw_job(conn, job_id, NOW + 100_000), every=100
    )
    assert len(withdrawn) == reaching
    return steps


async def copies_withdrawn(conn: aiosqlite.Connection, copies: int, tag: str) -> int:
    """Withdrawing the oldest of ``copies`` jobs with the same picture: the work."""
    for number in range(copies):
        await made_job(conn, f"{tag}{number:015x}", NOW + number, [tag.encode() * 32])
    return await withdrawal_steps(conn, f"{tag}{0:015x}", copies)


async def test_withdrawing_a_picture_copied_many_times_reads_each_copy_a_few_times(
    conn: aiosqlite.Connection,
) -> None:
    """Each copy found withdrawn used to join every copy again: 3,000 copies took 12 s on the
    shared connection."""
    few = await copies_withdrawn(conn, 100, "a")
    many = await copies_withdrawn(conn, 800, "b")
    assert many <= few * 8 * 1.5


async def chain_withdrawn(conn: aiosqlite.Connection, length: int, tag: str) -> int:
    """Withdrawing the first of ``length`` posted jobs, each holding a picture of the one
    before (``b``), each holding the picture of a job in a chain of ``length`` unfinished
    jobs made one from another (``a``), the last first: each twin found reaches one more
    ``a``, made before the ones already reached. The work."""

    def picture(name: str, number: int) -> bytes:
        return f"{tag}{name}{number}".encode().ljust(32, b".")

    for number in range(1, length + 1):
        pictures = [picture("g", number - 1), picture("g", number), picture("h", number)]
        await made_job(conn, f"{tag}b{number:014x}", NOW + number, pictures)
    for number in range(1, length + 1):
        await made_job(
            conn,
            f"{tag}a{number:014x}",
            NOW + 10_000 + number,
            [picture("h", length - number + 1)],
            made_from=f"{tag}a{number - 1:014x}" if number > 1 else None,
            delivered=False,
        )
    return await withdrawal_steps(conn, f"{tag}b{1:014x}", 2 * length)


async def test_a_chain_of_twins_reaching_jobs_made_from_others_reads_each_job_a_few_times(
    conn: aiosqlite.Connection,
) -> None:
    """Each twin found walked again every job made from it reached before (a chain of 1,000
    took 1.8 s)."""
    few = await chain_withdrawn(conn, 40, "c")
    many = await chain_withdrawn(conn, 160, "d")
    assert many <= few * 4 * 1.5


async def test_a_picture_reached_again_by_an_older_job_takes_the_copies_made_between(
    conn: aiosqlite.Connection,
) -> None:
    """A picture is asked for its later copies once per job reached earlier than any before
    with it: a job made from the withdrawn one (30) holds it first, a twin (10) of the
    withdrawn one (5) holds it next, and takes the copy made between (20); not an older
    one (1)."""
    shared, other = b"S" * 32, b"O" * 32
    await made_job(conn, "older", NOW + 1, [shared])
    await made_job(conn, "withdrawn", NOW + 5, [other])
    await made_job(conn, "twin", NOW + 10, [other, shared])
    await made_job(conn, "between", NOW + 20, [shared])
    await made_job(conn, "made from it", NOW + 30, [shared], made_from="withdrawn", delivered=False)
    withdrawn = await store.withdraw_job(conn, "withdrawn", NOW + 100)
    assert sorted(withdrawn) == ["between", "made from it", "twin", "withdrawn"]
