"""The worker's heartbeat (``worker._tell_models``) cancelled by the stop while its flush
waits for the server's PONG: nats-py would then set a result on the flush's cancelled future,
and its read loop log a traceback (CI, ``test_worker_stop``'s stop during a warm-up load)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import nats as nats_module
import pytest

from bot.jobs.broker import worker as worker_module
from tests.distributed.nats_server import NatsServer


class _Hub:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.name = "worker-under-test"


class _Loop:
    async def list_models(self) -> frozenset[str]:
        return frozenset({"tiny"})


async def test_a_heartbeat_cancelled_mid_flush_leaves_no_traceback(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats_module.connect(nats_server.url)
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(20):  # the cancel lands as the flush waits, more than once
                telling = asyncio.create_task(
                    worker_module._tell_models(cast(Any, _Hub(nc)), [cast(Any, _Loop())], 5.0)
                )
                for _ in range(3):
                    await asyncio.sleep(0)
                telling.cancel()
                await asyncio.gather(telling, return_exceptions=True)
            await nc.flush(5)  # every PONG in flight has come back
    finally:
        await nc.close()
    assert not [
        r
        for r in caplog.records
        if "InvalidStateError" in r.getMessage()
        or (r.exc_info is not None and isinstance(r.exc_info[1], asyncio.InvalidStateError))
    ]
