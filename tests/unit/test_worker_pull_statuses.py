"""A pull answered with a status other than "no job" (404, 408) is logged once per consumer
and status: a 409 (consumer deleted, too many waiting pulls) or a 400 makes each fetch wait
out its time, and before it was dropped without a word."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.aio.msg import Msg

from bot.jobs.broker import worker


def _status(code: str) -> Msg:
    return Msg(cast(Any, None), headers={"Status": code, "Description": f"reason {code}"})


async def _never_late(_: str, __: Msg) -> None:
    raise AssertionError("a status is no job")


async def test_refused_pulls_are_logged_once_per_consumer_and_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = cast(worker._Hub, SimpleNamespace(nc=SimpleNamespace(new_inbox=lambda: "_INBOX.x")))
    pullers = [worker._Puller(hub, name, _never_late) for name in ("model-a", "model-b")]
    for puller in pullers:
        for code in ("404", "408", "409", "409", "400", "408", "409"):
            await puller._arrived(_status(code))
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 4
    for name in ("model-a", "model-b"):
        for code in ("409", "400"):
            assert (
                sum(f"consumer {name} are answered {code} (reason {code})" in m for m in logged)
                == 1
            )
