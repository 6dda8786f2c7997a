"""The banned-word read of a prompt stops with its plan (bot.policy.moderation, AUD21): a
prompt whose choices end in thousands of ways, then one long text, read every ending's text
without a checkpoint, holding its reader for 13-23 s past its refusal; two servers with one
long banned word each then filled every reader, and a third server's plain prompt was
refused as "every prompt reader is busy" for as long as they kept sending it.

The tests wait on conditions with generous timeouts and count the reading done after the
refusals; they time nothing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from bot.policy import moderation
from bot.policy.prompt_safety import PLAN_THREADS, SERVER_THREADS, PromptPlanner
from bot.requests import MAX_PROMPT_CHARS
from bot.user_errors import Reason, UserError
from inference.types import RenderRequest

# 12 choices of one letter end in 4,096 ways (``MAX_CHECKED_ENDINGS``), each read again with
# the long text after them: seconds of reading per plan.
DENSE = "[a|b]" * 12 + " " + "long tail text " * 250
# One banned word of 13 letters: every ending is carried (not cut short by a shorter word).
BANNED = frozenset({"abcdefghijklm"})
# Far above what a stopped plan takes to free its reader; reached only when it reads on.
PATIENCE_S = 60.0
# A budget far below the dense prompt's reading (seconds), so every plan is refused mid-read,
# and far above a plain prompt's plan on a loaded machine.
BUDGET_S = 1.0


class CountedReads:
    """How many times the matcher read a text after an ending (``_Form.read``)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountedReads]:
    counted = CountedReads()
    read = moderation._Form.read

    def counting(form: moderation._Form, tail: str, text: str) -> str:
        counted.count += 1
        return read(form, tail, text)

    monkeypatch.setattr(moderation._Form, "read", counting)
    yield counted


async def test_two_servers_long_prompts_free_every_reader_soon_after_their_refusals(
    reads: CountedReads,
) -> None:
    """Two servers, two members each, send the dense prompt where one word is banned: all
    ``PLAN_THREADS`` readers read them, each refused at its budget. A third server's plain
    prompt is then admitted, and the refused plans read next to nothing after their refusals
    (at HEAD: every remaining ending's text, thousands of reads, ~15 s a plan)."""
    assert len(DENSE) <= MAX_PROMPT_CHARS
    assert SERVER_THREADS * 2 == PLAN_THREADS
    planner = PromptPlanner(None, budget_s=BUDGET_S)
    await planner.warm_up()  # what a first plan loads is not what the budget cuts short
    try:
        raid = [
            planner.check(RenderRequest(DENSE, seed=1, steps=2), BANNED, member, guild_id=guild)
            for guild in (1, 2)
            for member in (10 * guild + 1, 10 * guild + 2)
        ]
        refusals = await asyncio.gather(*raid, return_exceptions=True)
        read_at_refusal = reads.count
        for refused in refusals:  # each was read on a thread of its own: all readers held
            assert isinstance(refused, UserError), refused
            assert f"took longer than {BUDGET_S:g} s" in str(refused)
        admitted = await _admitted_once_a_reader_is_free(planner)
        assert admitted.prompt == "a red cat"
        assert await _all_plans_ended(planner)
        # Each stopped plan finishes the ending it was reading (a read per form), no more.
        assert reads.count - read_at_refusal <= PLAN_THREADS * 8
    finally:
        planner.close()


async def _admitted_once_a_reader_is_free(planner: PromptPlanner) -> RenderRequest:
    """Server 3's plain prompt (no banned word), sent again while every reader is busy, each
    time by another member (one whose plan a loaded machine read past its budget would be
    refused as still planning)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    members = itertools.count(31)
    while True:
        try:
            return await planner.check(
                RenderRequest("a red cat", seed=1, steps=2), frozenset(), next(members), guild_id=3
            )
        except UserError as refused:
            read_too_long = str(refused).startswith("Reading this prompt took longer")
            if not (refused.reason is Reason.BUSY or read_too_long) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def _all_plans_ended(planner: PromptPlanner) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_S
    while planner._reading or planner._server_reading:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
