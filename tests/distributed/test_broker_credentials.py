"""A queue URL's credentials reach the NATS server and nothing else: no log line, no error."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.wire import BrokerUnavailable, connect
from bot.jobs.broker.worker import WorkerConfig, serve
from inference.types import RenderRequest
from tests.distributed.nats_server import NatsServer
from tests.support.engines import InstantEngine

PASSWORD = "s3cret-pass"


async def test_the_broker_s_password_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = NatsServer(tmp_path / "jetstream", user="easel", password=PASSWORD)
    server.start()
    stop = asyncio.Event()
    config = WorkerConfig(server.url, ("gpu-0",), idle_poll_s=0.1)
    worker = asyncio.create_task(serve(config, lambda _: InstantEngine(), stop))
    try:
        client = await BrokerClient.open(BrokerConfig(server.url))
        (image,) = await client.render("job-1", RenderRequest("a cat", seed=3), None, None)
        await client.close()
        assert image.seed == 3  # the credentials did reach the server
    finally:
        stop.set()
        await worker
        server.stop()
    assert f"serving gpu-0 on nats://easel:***@127.0.0.1:{server.port}" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(config) + repr(BrokerConfig(server.url))


@pytest.mark.parametrize("userinfo", [f"easel:{PASSWORD}@", f"{PASSWORD}@"])
async def test_an_unreachable_broker_is_named_without_its_credentials(userinfo: str) -> None:
    with socket.socket() as closed, pytest.raises(BrokerUnavailable) as refused:
        closed.bind(("127.0.0.1", 0))  # a port of ours that nobody listens on
        closed_port = closed.getsockname()[1]
        await connect(f"nats://{userinfo}127.0.0.1:{closed_port}", "easel-test", timeout_s=0.5)
    assert f"@127.0.0.1:{closed_port}" in str(refused.value)
    assert PASSWORD not in str(refused.value)
