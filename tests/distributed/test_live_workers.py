"""``LiveWorkers``: when the bot holds a job's model unserved (no live worker has it), from
the workers' heartbeats alone (pure: no broker)."""

from __future__ import annotations

import json

import pytest

from bot.jobs.broker.live_workers import (
    LAPSED_AFTER_BEATS,
    MAX_HEARTBEAT_BYTES,
    MAX_LIVE_WORKERS,
    MAX_WORKER_MODELS,
    LiveWorkers,
)
from bot.jobs.broker.wire import WorkerModels

EVERY_S = 5.0
LAPSE_S = LAPSED_AFTER_BEATS * EVERY_S


def beat(worker: str, *models: str) -> bytes:
    return WorkerModels(worker, frozenset(models), EVERY_S).encode()


def test_nothing_is_unserved_while_no_worker_is_live() -> None:
    """All workers stopped, or none heard yet (a bot just started): jobs wait for them."""
    live = LiveWorkers()
    assert live.unserved_for("ghost", 0.0) == 0.0
    live.heard(beat("a", "tiny"), 0.0)
    assert live.unserved_for("ghost", 1.0) == 0.0  # a live worker lacks it: from now
    assert live.unserved_for("ghost", 4.0) == 3.0
    assert live.unserved_for("ghost", LAPSE_S + 1.0) == 0.0  # the worker lapsed: none live


def test_a_model_one_live_worker_has_is_served_and_the_wait_starts_again() -> None:
    live = LiveWorkers()
    live.heard(beat("a", "tiny"), 0.0)
    assert live.unserved_for("extra", 0.0) == 0.0
    assert live.unserved_for("extra", 2.0) == 2.0
    live.heard(beat("b", "tiny", "extra"), 3.0)
    assert live.unserved_for("extra", 3.0) == 0.0
    live.heard(beat("a", "tiny"), 10.0)  # b, which had it, died (its job left in hand)
    assert live.unserved_for("extra", 3.0 + LAPSE_S + 0.5) == 0.0  # a wait from there
    assert live.unserved_for("extra", 3.0 + LAPSE_S + 2.0) == 1.5


def test_a_worker_that_cannot_list_serves_every_model_and_the_default_is_served() -> None:
    live = LiveWorkers()
    live.heard(beat("a", "tiny"), 0.0)
    live.heard(WorkerModels("b", None, EVERY_S).encode(), 0.0)
    assert live.unserved_for("ghost", 0.0) == live.unserved_for("ghost", 5.0) == 0.0
    assert live.unserved_for(None, 5.0) == 0.0


def test_a_heartbeat_decodes_as_sent_and_a_malformed_one_is_refused() -> None:
    sent = WorkerModels("host/1/ab12", frozenset({"b", "a"}), EVERY_S)
    assert WorkerModels.decode(sent.encode()) == sent
    for data in (b"{}", b'{"worker": "w", "models": "abc", "every_s": 5}', b"not json"):
        with pytest.raises(ValueError, match="not a worker's heartbeat"):
            WorkerModels.decode(data)


@pytest.mark.parametrize("every_s", [1e300, 61.0, 0.01, 0])
def test_a_heartbeat_interval_no_worker_may_have_is_refused(every_s: float) -> None:
    """One of 1e300 s would keep a made-up worker live for good (refusals off)."""
    data = json.dumps({"worker": "fake", "models": ["x"], "every_s": every_s}).encode()
    with pytest.raises(ValueError, match=r"every_s must be within 0.05..60 seconds"):
        WorkerModels.decode(data)
    live = LiveWorkers()
    live.heard(data, 0.0)
    live.heard(beat("real", "tiny"), 0.0)
    assert live.unserved_for("x", 0.0) == 0.0
    assert live.unserved_for("x", 1.0) == 1.0  # "fake" was not kept: 'x' unserved


def test_made_up_heartbeats_past_the_caps_are_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker's broker user floods the bot with beats under new names, or naming too many
    models, or too long: the bot keeps at most ``MAX_LIVE_WORKERS``, says so once, and a
    worker it keeps still refreshes its entry."""
    live = LiveWorkers()
    for n in range(MAX_LIVE_WORKERS):
        live.heard(beat(f"w{n}", "tiny"), 0.0)
    too_many = [f"m{n}" for n in range(MAX_WORKER_MODELS + 1)]
    too_long = "y" * MAX_HEARTBEAT_BYTES
    for dropped in (beat("one-more", "x"), beat("w0", *too_many), beat("w1", too_long)):
        live.heard(dropped, 1.0)
    for model in ("x", "m5", too_long):  # unserved from now: none of those beats kept
        assert live.unserved_for(model, 1.0) == 0.0
        assert live.unserved_for(model, 2.0) == 1.0
    told = [r.getMessage() for r in caplog.records if "heartbeat dropped" in r.getMessage()]
    assert len(told) == 1 and "128 workers are live already" in told[0]
    live.heard(beat("w0", "x"), 3.0)  # a kept worker refreshes its entry
    assert live.unserved_for("x", 3.0) == 0.0


def test_a_result_from_a_worker_not_heard_while_others_are_is_said_once() -> None:
    """Not in the first 60 s of hearing (each worker may not have beaten yet), not while no
    worker is heard at all, and once a worker."""
    live = LiveWorkers()
    assert not live.unheard("old", 100.0)  # none heard
    live.heard(beat("new", "tiny"), 100.0)
    assert not live.unheard("old", 101.0)  # just started hearing
    live.heard(beat("new", "tiny"), 160.0)
    assert not live.unheard("new", 160.0)
    assert live.unheard("old", 160.0)
    assert not live.unheard("old", 161.0)  # said once
