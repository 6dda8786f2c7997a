"""Whether Discord's gateway connection is up, for ``/healthz`` and ``/metrics``.

discord.py's ``is_ready()`` stays true after the websocket drops (it is cleared only when the
client closes), while no interaction reaches Easel: the connection is followed from its events
instead (``EaselBot.on_connect``, ``on_resumed``, ``on_disconnect``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import metrics

# How long the gateway may stay disconnected before /healthz answers 503. discord.py reconnects
# (and RESUMEs) on its own, usually within seconds, backing off while Discord is away: a
# container restart helps only once that has failed for a while, and would itself lose the
# session that a RESUME keeps.
GATEWAY_GRACE_S = 120.0


class GatewayHealth:
    """Told of each READY or RESUMED (``connected``) and each drop (``disconnected``: once per
    failed reconnect too, which counts once); says what /healthz says of it (``trouble``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lost_at: float | None = None  # when the connection dropped; None: up, or not yet
        self._connected = False
        metrics.watch_gateway(self.is_up)

    def is_up(self) -> bool:
        return self._connected

    def connected(self) -> None:
        self._connected = True
        self._lost_at = None

    def disconnected(self) -> None:
        if not self._connected:  # a failed reconnect, or no connection yet: nothing new lost
            return
        self._connected = False
        self._lost_at = self._clock()
        metrics.gateway_lost()

    def trouble(self) -> str | None:
        """/healthz's 503 line once the connection has been down longer than
        ``GATEWAY_GRACE_S``; None while it is up, within the grace, or before the first
        connection (/healthz says "starting" then)."""
        if self._lost_at is None:
            return None
        down_s = self._clock() - self._lost_at
        if down_s <= GATEWAY_GRACE_S:
            return None
        return f"Discord gateway disconnected for {down_s:.0f} s"
