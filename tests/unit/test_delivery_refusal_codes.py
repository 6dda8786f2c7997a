"""The delivery's banned-words check reads why it was refused by its code, never its text:
busy is asked again, too long to check is withheld (refunded), shutting down fails the
delivery; and the refusals it reads carry those codes where they are made."""

from __future__ import annotations

from typing import cast

import pytest

from bot.jobs.queue import FinishedJob
from bot.policy import delivery
from bot.policy.delivery import NOT_CHECKED, Withheld, under_rules_of_now
from bot.policy.guild import GuildPolicy
from bot.policy.moderation import (
    ConditioningTexts,
    TooManyCombinations,
    as_the_stored_pictures_refusal,
)
from bot.policy.prompt_safety import PromptPlanner
from bot.user_errors import Reason, UserError
from inference.types import RenderRequest

WORDS = "Some sentence a later change may reword."


class RefusingPolicy:
    """The server's rules: every check passes but the banned words', refused with
    ``reasons`` in turn (then passed)."""

    def __init__(self, *reasons: Reason) -> None:
        self.reasons = list(reasons)
        self.asked = 0

    async def check_reuse(self, *_: object, **__: object) -> None:
        self.asked += 1
        if self.reasons:
            raise UserError(WORDS, self.reasons.pop(0))

    async def check_channel(self, *_: object) -> None:
        return None


def done() -> FinishedJob:
    return FinishedJob(
        job_id="a" * 16,
        kind="imagine",
        succeeded=True,
        error=None,
        request=RenderRequest(prompt="a barn"),
        user_id=7,
        guild_id=None,  # direct messages: the server's other rules are not read
        channel_id=None,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=(),
    )


async def deliver_under(policy: RefusingPolicy) -> FinishedJob:
    return await under_rules_of_now(done(), cast(GuildPolicy, policy), never_asked, never_asked)


async def never_asked() -> bool:
    raise AssertionError("a job of direct messages asks nothing of a server")


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "BUSY_PAUSE_S", 0.0)


async def test_busy_is_asked_again_then_posted() -> None:
    policy = RefusingPolicy(Reason.BUSY, Reason.BUSY)
    await deliver_under(policy)
    assert policy.asked == 3


async def test_too_long_to_check_is_withheld_at_once_refunded() -> None:
    policy = RefusingPolicy(Reason.UNCHECKED)
    with pytest.raises(Withheld) as withheld:
        await deliver_under(policy)
    assert (withheld.value.why, withheld.value.refund, policy.asked) == (NOT_CHECKED, True, 1)


async def test_shutting_down_fails_the_delivery() -> None:
    policy = RefusingPolicy(Reason.CLOSED)
    with pytest.raises(UserError) as refused:
        await deliver_under(policy)
    assert (refused.value.reason, policy.asked) == (Reason.CLOSED, 1)


def test_a_stored_text_too_long_to_check_is_refused_as_unchecked() -> None:
    with pytest.raises(UserError) as refused, as_the_stored_pictures_refusal():
        raise TooManyCombinations()
    assert refused.value.reason is Reason.UNCHECKED


async def test_a_closed_planner_refuses_a_stored_check_as_closed() -> None:
    planner = PromptPlanner(wildcards_dir=None)
    planner.close()
    with pytest.raises(UserError) as refused:
        await planner.check_stored(ConditioningTexts(("a cat",)), {"dog"}, guild_id=1)
    assert refused.value.reason is Reason.CLOSED
