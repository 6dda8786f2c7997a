"""Workers upgraded on a broker still configured for an older Easel (deploy/nats-server.conf
without the worker's right to ask about the bot's decisions): jobs render, checked in the
results stream alone, and the worker's log names the right to add, once. Before: each check
waited out the refused request and retried for a minute, so no job rendered; each failed
after its deliveries ("each worker stopped mid-render")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.worker import SETTLED_GRANT, WorkerConfig, serve
from inference.types import RenderRequest
from tests.distributed.nats_server import REPO_ROOT, NatsServer
from tests.distributed.test_broker_permissions import PASSWORDS
from tests.support.engines import InstantEngine


@pytest.fixture
def old_server(tmp_path: Path) -> Iterator[NatsServer]:
    deployed = (REPO_ROOT / "deploy" / "nats-server.conf").read_text()
    grant = f'  "{SETTLED_GRANT}",\n'
    assert grant in deployed
    old_conf = tmp_path / "nats-server.conf"
    old_conf.write_text(deployed.replace(grant, ""))
    started = NatsServer(tmp_path / "jetstream", config_file=old_conf, environment=PASSWORDS)
    started.start()
    yield started
    started.stop()


async def test_a_worker_without_the_right_to_see_the_bots_decisions_still_renders(
    old_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bot.jobs.broker.worker")
    bot_url = old_server.url_for("bot", PASSWORDS["EASEL_NATS_BOT_PASSWORD"])
    client = await BrokerClient.open(BrokerConfig(bot_url, ack_wait_s=30))
    engine = InstantEngine()
    stop = asyncio.Event()
    worker_url = old_server.url_for("worker-1", PASSWORDS["EASEL_NATS_WORKER_1_PASSWORD"])
    config = WorkerConfig(worker_url, ("gpu-0",), idle_poll_s=0.1)
    worker = asyncio.create_task(serve(config, lambda _: engine, stop))
    try:
        async with asyncio.timeout(20):  # the first check waits out one refused request (5 s)
            for seed in range(2):
                await client.render(f"job-{seed}", RenderRequest("x", seed=seed), None, None)
    finally:
        stop.set()
        await worker
        await client.close()
    assert [request.seed for request in engine.rendered] == [0, 1]
    refusals = [r.getMessage() for r in caplog.records if r.name == "bot.jobs.broker.worker"]
    assert len(refusals) == 1
    assert f"add {SETTLED_GRANT} to every worker user" in refusals[0]
