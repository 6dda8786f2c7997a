"""cogs.history's /forget-me when its erase fails part way: the retry is woken whatever
becomes of the failure's answer (review R_L5, finding 2)."""

from __future__ import annotations

import aiohttp
import pytest

from bot.history import TellFailed
from cogs import history as cogs_history
from cogs.history import HistoryCog
from tests.unit.test_member_cooldown import forget_me_interaction


class FailingErase:
    """``History.forget`` failing after its request was journaled: the member is told
    (``failed``), then the error is raised."""

    async def forget(
        self, user_id: int, reply: object, tell: object, failed: TellFailed, **_options: object
    ) -> None:
        error = OSError("disk I/O error")
        await failed(error)
        raise error


async def test_a_failure_whose_answer_discord_drops_still_wakes_the_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure's answer fails with a network error (not an HTTPException, which
    ``report_error`` catches): logged in one line, and the retry is woken all the same;
    nothing is raised for the command's handler to answer again ("try again later")."""

    async def report_error(*_args: object, **_kwargs: object) -> None:
        raise aiohttp.ClientOSError(104, "Connection reset by peer")

    monkeypatch.setattr(cogs_history, "report_error", report_error)
    cog = HistoryCog(FailingErase())  # type: ignore[arg-type]
    await cog._erase(forget_me_interaction())
    assert cog._sweep_now.is_set()
    assert "a failure could not be told (ClientOSError)" in caplog.text


async def test_a_failure_before_the_request_was_journaled_is_raised_to_be_answered() -> None:
    """Nothing was journaled (the request's own write failed): no retry will finish it, so the
    error goes to the command's handler, which tells the member to try again."""

    class Unjournaled:
        async def forget(self, user_id: int, *_answers: object, **_options: object) -> None:
            raise OSError("database is locked")

    cog = HistoryCog(Unjournaled())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="database is locked"):
        await cog._erase(forget_me_interaction())
    assert cog._forget_me_cooldown.claim(1) is None  # they may run it again at once
