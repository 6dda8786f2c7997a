"""What a job is charged in GPU-seconds: its render, in-process as on NATS. A NATS worker
reports its render in the result (``ResultMessage.render_s``): the bot's wait from publish to
result holds the job's wait in the broker behind others, which is not charged. A worker from
before that field is charged from its first progress report, as a cancel is; a report longer
than the bot's wait is cut to that wait. The real queue (and a real nats-server), one device,
two jobs in flight on NATS (more slots than devices, as ``EASEL_REMOTE_SLOTS`` is)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.broker.wire import Outcome, ResultMessage
from bot.jobs.queue import RenderSlot, Submission
from bot.policy.quota import Period, period_start
from db import quotas as ledger
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport, Transport
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

SERVER = 5
MEMBERS = (7, 8)
RENDER_S = 1.5
# How this version writes a result, kept before a test replaces it.
_WRITTEN = ResultMessage.encode


def _written_with(render_s: object) -> Callable[[ResultMessage], bytes]:
    """``ResultMessage.encode`` as a worker reporting ``render_s`` writes it (None: a worker
    from before the field, which writes none)."""

    def encode(message: ResultMessage) -> bytes:
        body = json.loads(_WRITTEN(message))
        body.pop("render_s", None)
        if render_s is not None:
            body["render_s"] = render_s
        return json.dumps(body).encode()

    return encode


async def _charged(
    conn: aiosqlite.Connection, tmp_path: Path, slots: Sequence[RenderSlot]
) -> list[float]:
    """The GPU-seconds each of ``MEMBERS`` is charged for one job of ``RENDER_S`` each,
    submitted at once for one device (on NATS: both handed to the broker at once, the second
    waiting there for the first)."""
    queue, sink = await started_queue(conn, slots, tmp_path / "images")
    try:
        for member, steps in zip(MEMBERS, (4, 5), strict=True):  # not one batch
            request = RenderRequest("a cat", seed=member, steps=steps)
            await queue.submit(Submission("imagine", request, member, SERVER))
        async with asyncio.timeout(60):
            await sink.wait_for(len(MEMBERS))
    finally:
        await queue.stop()
    assert all(job.succeeded for job in sink.delivered)
    day = period_start(Period.DAY, time.time())
    return [(await ledger.usage(conn, member, SERVER, day)).gpu_seconds for member in MEMBERS]


async def _charged_on_nats(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> list[float]:
    client = await nats.client(slots=len(MEMBERS))
    nats.start_worker(InstantEngine(seconds=RENDER_S))
    return await _charged(conn, tmp_path, client.slots())


async def test_each_member_is_charged_their_own_render_not_the_wait_for_the_device(
    conn: aiosqlite.Connection, tmp_path: Path, transport: Transport
) -> None:
    charged = await _charged(conn, tmp_path, await transport.slots(InstantEngine(RENDER_S)))
    # Each render sleeps RENDER_S at least; paying for the other's too would double it.
    assert all(0.9 < seconds / RENDER_S < 1.9 for seconds in charged), (transport.name, charged)


async def test_a_result_from_a_worker_before_render_seconds_is_charged_from_its_first_report(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ResultMessage, "encode", _written_with(None))
    charged = await _charged_on_nats(conn, tmp_path, nats)
    # Its first step (a quarter or a fifth of it) is not seen; the other's render, waited
    # for in the broker, would double it.
    assert all(0.6 < seconds / RENDER_S < 1.9 for seconds in charged), charged


@pytest.mark.parametrize("claimed", [1e6, -5.0])
async def test_a_workers_report_is_kept_within_the_bots_wait(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
    claimed: float,
) -> None:
    monkeypatch.setattr(ResultMessage, "encode", _written_with(claimed))
    charged = await _charged_on_nats(conn, tmp_path, nats)
    if claimed < 0:
        assert charged == [0.0, 0.0]
    else:  # no more than the bot waited: one render, or two for the job that waited
        assert all(seconds / RENDER_S < 10 for seconds in charged), charged


def test_results_of_other_versions_are_read() -> None:
    """A worker from before ``render_s`` sends none (None: the bot measures); a newer worker's
    result with a field this bot does not know is read all the same (decoding ignores it), so
    an older bot keeps reading a newer worker's results; a malformed ``render_s`` is None."""
    done = ResultMessage("job-1", Outcome.DONE, "worker", 1, render_s=2.5)
    body = json.loads(done.encode())
    assert ResultMessage.decode(done.encode()) == done
    older = {key: value for key, value in body.items() if key != "render_s"}
    assert ResultMessage.decode(json.dumps(older).encode()) == replace(done, render_s=None)
    newer = {**body, "a_later_field": [1, 2]}
    assert ResultMessage.decode(json.dumps(newer).encode()) == done
    for malformed in ("2.5", True, float("nan"), float("inf"), [1], 10**400):
        sent = json.dumps({**body, "render_s": malformed}).encode()
        assert ResultMessage.decode(sent).render_s is None, malformed
