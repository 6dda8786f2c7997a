"""A ping whose caller stops waiting before its PONG comes (``worker._pong_within``): the
heartbeat (``worker._tell_models``) cancelled by the stop, the stop's flush after a stuck
device (``serve``) or a round-trip measure timing out. nats-py's own wait (``flush``, ``rtt``)
would cancel the PONG's future, and its read loop log a traceback (InvalidStateError) when the
PONG comes (CI, ``test_worker_stop``'s stop during a warm-up load), and stop reading. A ping
that outlasts nats-py's own stale detection also survives a broker frozen longer than its
caller waited."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bot.jobs.broker import wire
from bot.jobs.broker import worker as worker_module
from tests.distributed.nats_server import NatsServer
from tests.support.polling import POLLED_WAIT_S, until

# Each caller gives up this often: at least one PONG comes after its caller left.
TRIES = 20
# A frozen broker is found stale within three such pings (``wire.stale_within_s``): scaled down
# from ``wire.PING_INTERVAL_S``.
FAST_PING_INTERVAL_S = 0.05
# A cancelled heartbeat ends at its next await: this bounds only a cancel that was swallowed
# (nats-py's ``wait_for`` on Python 3.11), which would leave it beating.
CANCEL_ENDS_WITHIN_S = 5.0


class _Hub:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.name = "worker-under-test"


class _Loop:
    async def list_models(self) -> frozenset[str]:
        return frozenset({"tiny"})


@contextlib.asynccontextmanager
async def no_late_pong_traceback(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[NatsClient]:
    """A connection (as the worker's) whose read loop must log no InvalidStateError until
    every PONG awaited has come back."""
    nc = await wire.connect(nats_server.url, "worker-under-test")
    try:
        with caplog.at_level(logging.ERROR):
            yield nc
            async with asyncio.timeout(POLLED_WAIT_S):
                await asyncio.gather(*worker_module._PINGS_AWAITED)
            await nc.flush(5)  # every PONG in flight has come back
    finally:
        await nc.close()
    assert not [
        r
        for r in caplog.records
        if "InvalidStateError" in r.getMessage()
        or (r.exc_info is not None and isinstance(r.exc_info[1], asyncio.InvalidStateError))
    ]


async def test_a_heartbeat_cancelled_mid_flush_leaves_no_traceback(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with no_late_pong_traceback(nats_server, caplog) as nc:
        for _ in range(TRIES):  # the cancel lands as the flush waits, more than once
            telling = asyncio.create_task(
                worker_module._tell_models(cast(Any, _Hub(nc)), [cast(Any, _Loop())], 5.0)
            )
            for _ in range(3):
                await asyncio.sleep(0)
            telling.cancel()
            async with asyncio.timeout(CANCEL_ENDS_WITHIN_S):
                await asyncio.gather(telling, return_exceptions=True)


async def test_a_ping_its_caller_gave_up_on_leaves_no_traceback(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop's flush after a stuck device, and a round-trip measure, on a broker slower
    than their wait (here: none at all): no round trip is told, and the late PONG is read. One
    waited for is told."""
    async with no_late_pong_traceback(nats_server, caplog) as nc:
        told = [await worker_module._pong_within(nc, 0) for _ in range(TRIES)]
        assert told == [None] * TRIES
        assert worker_module._PINGS_AWAITED  # their PONGs had not come back yet
        measured = await worker_module._pong_within(nc, 5)
        assert measured is not None and measured > 0


async def test_a_broker_frozen_past_a_pings_wait_then_back_is_still_heard(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker frozen (its TCP connection up) until every ping whose caller gave up has
    stopped waiting for its PONG, then back: nats-py dropped the stale connection before, so
    no late PONG stops the read loop, and a message sent after is heard. Scaled down: a ping
    every ``FAST_PING_INTERVAL_S``."""
    monkeypatch.setattr(wire, "PING_INTERVAL_S", FAST_PING_INTERVAL_S)
    async with no_late_pong_traceback(nats_server, caplog) as nc:
        heard: list[bytes] = []

        async def on_probe(msg: Msg) -> None:
            heard.append(msg.data)

        await nc.subscribe("probe", cb=on_probe)
        await nc.flush(5)
        with nats_server.frozen():
            told = [await worker_module._pong_within(nc, 0) for _ in range(TRIES)]
            await until(lambda: not worker_module._PINGS_AWAITED)  # every ping gave up
            assert not nc.is_connected  # nats-py had left the connection as stale
        assert told == [None] * TRIES
        await until(lambda: nc.is_connected)
        await nc.publish("probe", b"after")
        await until(lambda: heard == [b"after"])
