"""In a burst, a command's work after its acknowledgement (journal, queue, the "queued" edit)
waits for the answers to the commands received before that work began, so the last of a
burst is not acknowledged behind the others' work (bot.acknowledge_first, issue 12)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from bot.acknowledge_first import SLOWED_BY_PLANS_S, AcknowledgeFirst
from bot.policy.prompt_safety import PromptPlanner
from inference.types import RenderRequest
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.fake_discord import FakeDiscord

EARLIER = 4242  # a command received before, whose answer is still on its way
LONG_S = 60.0  # a bound no test waits for
HELD_S = 0.4  # the job must not show up in this time while EARLIER is unanswered
# Once EARLIER is answered, the "queued" edit comes within this (journal, queue, one edit on
# the fake; generous for a loaded machine, far inside LONG_S).
RELEASED_S = 0.5
# A slow plan holds the other member's job SLOWED_BY_PLANS_S into it; generous under load.
HELD_BY_SLOW_S = 2.0
SLOW_MEMBER = 4343
SLOW_PROMPT = "a cat, read slowly"


def recording(
    method: Callable[[AcknowledgeFirst, int], None], calls: list[tuple[str, int]], name: str
) -> Callable[[AcknowledgeFirst, int], None]:
    def record(gate: AcknowledgeFirst, interaction_id: int) -> None:
        calls.append((name, interaction_id))
        method(gate, interaction_id)

    return record


async def test_each_command_is_counted_as_it_arrives_and_once_it_is_answered(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    for name in ("received", "answered"):
        method: Any = getattr(AcknowledgeFirst, name)
        monkeypatch.setattr(AcknowledgeFirst, name, recording(method, calls, name))
    async with start_easel():
        command = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await command.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert calls == [("received", command.id), ("answered", command.id)]


async def test_a_job_is_journaled_once_the_commands_received_before_it_are_answered(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "bot.app.AcknowledgeFirst", functools.partial(AcknowledgeFirst, queued_bound_s=LONG_S)
    )
    async with start_easel() as bot:
        bot.acknowledge_first.received(EARLIER)
        command = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await command.wait_for_ack()
        with pytest.raises(TimeoutError):  # still "thinking…": nothing journaled or queued
            await command.wait_for_original(lambda message: not message.is_loading, HELD_S)

        bot.acknowledge_first.answered(EARLIER)
        # released by the answer: queued (or already rendered) at once, not after LONG_S
        await command.wait_for_original(lambda message: not message.is_loading, RELEASED_S)
        await command.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert bot.acknowledge_first.unanswered == 0


async def test_one_members_slow_prompt_plan_holds_another_members_job_only_briefly(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command unanswered because its own prompt plan runs long (member-written, up to
    2.5 s) holds the work after other members' acknowledgements only ``SLOWED_BY_PLANS_S``
    into that plan, however long the queued commands' bound."""
    assert SLOWED_BY_PLANS_S < HELD_BY_SLOW_S
    monkeypatch.setattr(
        "bot.app.AcknowledgeFirst", functools.partial(AcknowledgeFirst, queued_bound_s=LONG_S)
    )
    slow_plan_ends = threading.Event()
    plan = PromptPlanner._plan

    def slow_for_one_prompt(planner: PromptPlanner, request: RenderRequest, *rest: Any) -> Any:
        if request.prompt == SLOW_PROMPT:
            slow_plan_ends.wait(RENDER_TIMEOUT_S)
        return plan(planner, request, *rest)

    monkeypatch.setattr(PromptPlanner, "_plan", slow_for_one_prompt)
    fake_discord.add_member(SLOW_MEMBER, "slow", roles=(fake_discord.member_role_id,))
    async with start_easel():
        slow = await fake_discord.invoke_command(
            "imagine", {"prompt": SLOW_PROMPT, **QUICK}, user=SLOW_MEMBER
        )
        command = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        try:
            await command.wait_for_ack()
            # journaled and queued (or rendered) while the slow plan still runs
            await command.wait_for_original(lambda message: not message.is_loading, HELD_BY_SLOW_S)
            assert slow.ack_latency is None
        finally:
            slow_plan_ends.set()
        await slow.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
