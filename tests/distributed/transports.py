"""Render slots for the queue tests: in-process device threads, or NATS with a worker task."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import RenderSlot
from inference.worker import DeviceWorker
from tests.distributed.nats_server import NatsServer
from tests.support.engines import InstantEngine

__all__ = ["LocalTransport", "NatsTransport", "Transport", "nats", "transport"]

# Short enough that redelivery tests take a second, long enough for a loaded CI machine.
TEST_ACK_WAIT_S = 1.0


class Transport(Protocol):
    name: str

    async def slots(self, engine: InstantEngine) -> Sequence[RenderSlot]: ...


class LocalTransport:
    name = "in-process"

    async def slots(self, engine: InstantEngine) -> Sequence[RenderSlot]:
        return [DeviceWorker("cpu", lambda _: engine)]


class NatsTransport:
    """Remote slots, and one worker (an asyncio task with one device) per ``slots`` call."""

    name = "nats"

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self._stop = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._clients: list[BrokerClient] = []
        # One key for every client: a "restarted" bot verifies its predecessor's jobs.
        self.job_key = secrets.token_bytes(32)

    async def client(
        self,
        slots: int = 2,
        ack_wait_s: float = TEST_ACK_WAIT_S,
        unserved_wait_s: float = BrokerConfig.unserved_wait_s,
    ) -> BrokerClient:
        config = BrokerConfig(
            self.server.url,
            slots=slots,
            ack_wait_s=ack_wait_s,
            result_recheck_s=0.3,
            job_key=self.job_key,
            unserved_wait_s=unserved_wait_s,
        )
        client = await BrokerClient.open(config)
        self._clients.append(client)
        return client

    def start_worker(
        self,
        engine: InstantEngine,
        devices: tuple[str, ...] = ("gpu-0",),
        fetch_timeout_s: float = WorkerConfig.fetch_timeout_s,
        heartbeat_s: float = WorkerConfig.heartbeat_s,
    ) -> None:
        config = WorkerConfig(
            self.server.url,
            devices,
            idle_poll_s=0.1,
            fetch_timeout_s=fetch_timeout_s,
            heartbeat_s=heartbeat_s,
        )
        self._workers.append(asyncio.create_task(serve(config, lambda _: engine, self._stop)))

    async def slots(self, engine: InstantEngine) -> Sequence[RenderSlot]:
        client = await self.client()
        self.start_worker(engine)
        return client.slots()

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._workers)
        for client in self._clients:
            await client.close()


@pytest.fixture
async def nats(nats_server: NatsServer) -> AsyncIterator[NatsTransport]:
    transport = NatsTransport(nats_server)
    try:
        yield transport
    finally:
        await transport.close()


@pytest.fixture(params=["in-process", "nats"])
async def transport(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Transport]:
    if request.param == "in-process":
        yield LocalTransport()
        return
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    remote = NatsTransport(server)
    try:
        yield remote
    finally:
        await remote.close()
        server.stop()
