"""bot.gateway_health: /healthz's line for Discord's gateway, on a clock the test moves."""

from __future__ import annotations

from bot.gateway_health import GATEWAY_GRACE_S, GatewayHealth
from bot.metrics import METRICS_REGISTRY
from tests.unit.test_member_cooldown import Clock


def sample(name: str) -> float:
    value = METRICS_REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} is not served"
    return value


def test_down_past_the_grace_is_trouble_until_a_reconnect_and_a_drop_counts_once() -> None:
    clock = Clock()
    gateway = GatewayHealth(clock)
    drops = sample("easel_gateway_disconnects_total")
    gateway.disconnected()  # a first connection that failed: nothing was lost
    assert gateway.trouble() is None and sample("easel_gateway_disconnects_total") == drops
    gateway.connected()
    assert sample("easel_gateway_connected") == 1
    gateway.disconnected()
    clock.now += GATEWAY_GRACE_S
    gateway.disconnected()  # a failed reconnect: the drop's time and count stay
    assert gateway.trouble() is None  # within the grace, to its last second
    assert sample("easel_gateway_connected") == 0
    clock.now += 1
    assert gateway.trouble() == f"Discord gateway disconnected for {GATEWAY_GRACE_S + 1:.0f} s"
    assert sample("easel_gateway_disconnects_total") == drops + 1
    gateway.connected()  # a RESUMED or a READY
    assert gateway.trouble() is None and sample("easel_gateway_connected") == 1
