"""Fixtures: a real nats-server per test, and the transports the queue tests run against."""

from tests.distributed.nats_server import nats_server
from tests.distributed.transports import nats, transport

__all__ = ["nats", "nats_server", "transport"]
