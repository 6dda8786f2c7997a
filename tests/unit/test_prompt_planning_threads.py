"""Planning a prompt holds none of the threads the rest of the bot needs, a member holds
at most one planning thread (bot.policy.prompt_safety.PromptPlanner): their prompts are read
one after the other, and refused at once while one runs on past its budget; and a server holds
at most its share of them.

A costly plan is stood in for by one that blocks until the test lets it go: the tests wait on
events, never on how long real planning takes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosqlite
import pytest

from bot.policy import prompt_safety
from bot.policy.guild import GuildPolicy
from bot.policy.moderation import ConditioningTexts
from bot.policy.prompt_safety import (
    READERS_BUSY,
    SERVER_THREADS,
    STILL_PLANNING,
    PromptPlanner,
    server_readers_busy,
)
from bot.user_errors import UserError
from inference.types import RenderRequest

MEMBER_A, MEMBER_B, GUILD, OTHER_GUILD = 1, 2, 100, 200
SLOW = RenderRequest("slow", seed=1, steps=2)
QUICK = RenderRequest("quick", seed=1, steps=2)
QUICK_TOO = RenderRequest("quick too", seed=1, steps=2)
# Far above what a free thread takes; reached only when a plan waits for a busy one.
PATIENCE_S = 5.0


class BlockingPlans:
    """``plan_request`` where the prompt "slow" runs until ``release`` is set."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)  # one per slow plan that started
        self.release = threading.Event()
        self.read: list[str] = []  # the prompts, as their reading starts

    def __call__(
        self,
        request: RenderRequest,
        banned_words: Collection[str],
        wildcards_dir: Path | None,
        *_addons: object,
    ) -> RenderRequest:
        self.read.append(request.prompt)
        if request.prompt == SLOW.prompt:
            self.started.release()
            self.release.wait(30)
        return request


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlockingPlans]:
    blocking = BlockingPlans()
    monkeypatch.setattr(prompt_safety, "plan_request", blocking)
    yield blocking
    blocking.release.set()  # no thread outlives the test


async def started(plans: BlockingPlans, times: int = 1) -> None:
    for _ in range(times):
        assert await asyncio.to_thread(plans.started.acquire, True, PATIENCE_S)


async def test_a_slow_plan_delays_neither_another_members_plan_nor_the_bots_threads(
    plans: BlockingPlans,
) -> None:
    loop = asyncio.get_running_loop()
    # The bot's shared pool as busy as it gets: one thread, which the slow plan must not take.
    loop.set_default_executor(ThreadPoolExecutor(1))
    planner = PromptPlanner(None, budget_s=60)
    slow = asyncio.create_task(planner.check(SLOW, (), MEMBER_A, guild_id=GUILD))
    await started(plans)
    assert (
        await asyncio.wait_for(planner.check(QUICK, (), MEMBER_B, guild_id=GUILD), PATIENCE_S)
        == QUICK
    )
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "written"), PATIENCE_S) == "written"
    # A's next prompt, within its budget, waits for A's thread rather than taking another.
    waiting = asyncio.create_task(planner.check(QUICK_TOO, (), MEMBER_A, guild_id=GUILD))
    await asyncio.sleep(0.1)
    assert not waiting.done() and plans.read == ["slow", "quick"]
    plans.release.set()
    assert (await slow, await waiting) == (SLOW, QUICK_TOO)
    assert plans.read == ["slow", "quick", "quick too"]


async def test_a_members_second_prompt_is_refused_while_the_first_is_read_even_after_its_refusal(
    plans: BlockingPlans,
) -> None:
    planner = PromptPlanner(None, budget_s=0.05)
    with pytest.raises(UserError, match=r"took longer than 0\.05 s"):
        await planner.check(SLOW, (), MEMBER_A, guild_id=GUILD)
    assert plans.started.acquire(blocking=False)  # refused, but its thread reads on
    with pytest.raises(UserError) as refused:
        await planner.check(QUICK, (), MEMBER_A, guild_id=GUILD)
    assert str(refused.value) == STILL_PLANNING
    with pytest.raises(UserError, match="still being read"):
        await planner.explain("quick", "", 2, MEMBER_A, guild_id=GUILD)
    # Nobody else is held up by A's thread.
    assert await planner.check(QUICK, (), MEMBER_B, guild_id=GUILD) == QUICK
    plans.release.set()
    for _ in range(500):  # the thread's end frees A (its done callback, on that thread)
        try:
            assert await planner.check(QUICK, (), MEMBER_A, guild_id=GUILD) == QUICK
            break
        except UserError:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("member A was never let plan again")


async def test_a_member_whose_prompt_never_got_a_reader_is_told_so_and_not_held(
    plans: BlockingPlans,
) -> None:
    """Every reader busy with another member's long prompt: a member's own prompt, which
    never started, is refused as such (not "simplify it"), and their next one is not
    refused as still being read."""
    planner = PromptPlanner(None, budget_s=0.2)
    planner._threads = ThreadPoolExecutor(1)  # every reader: the one the slow prompt holds
    slow = asyncio.create_task(planner.check(SLOW, (), MEMBER_A, guild_id=GUILD))
    await started(plans)
    with pytest.raises(UserError) as refused:
        await planner.check(QUICK, (), MEMBER_B, guild_id=GUILD)
    assert str(refused.value) == READERS_BUSY
    plans.release.set()
    with pytest.raises(UserError, match="took longer"):
        await slow
    for _ in range(500):  # A is free once its thread ends
        if not planner._reading:
            break
        await asyncio.sleep(0.01)
    assert await planner.check(QUICK_TOO, (), MEMBER_B, guild_id=GUILD) == QUICK_TOO
    assert plans.read == ["slow", "quick too"]  # B's first prompt was never read


async def test_a_prompt_whose_budget_went_waiting_for_the_members_previous_one_says_so(
    plans: BlockingPlans,
) -> None:
    planner = PromptPlanner(None, budget_s=0.2)
    slow = asyncio.create_task(planner.check(SLOW, (), MEMBER_A, guild_id=GUILD))
    await started(plans)
    with pytest.raises(UserError) as refused:
        await planner.check(QUICK, (), MEMBER_A, guild_id=GUILD)  # never read: not "simplify it"
    assert str(refused.value) == STILL_PLANNING
    plans.release.set()
    with pytest.raises(UserError, match="took longer"):
        await slow
    assert plans.read == ["slow"]


@pytest.mark.parametrize("crowded", [GUILD, None], ids=["a server", "direct messages"])
async def test_a_server_holds_its_share_of_readers_and_another_servers_prompt_is_read_at_once(
    plans: BlockingPlans, crowded: int | None
) -> None:
    """A server's members (direct messages: everyone's, together) fill its share of the
    readers with prompts that never end: its next prompt waits for one of them (read once
    one ends) and is refused past its budget, saying so; another server's is read at once."""
    planner = PromptPlanner(None, budget_s=60, explain_budget_s=0.2, stored_budget_s=0.2)
    members = range(10, 10 + SERVER_THREADS)
    slow = [
        asyncio.create_task(planner.check(SLOW, (), member, guild_id=crowded)) for member in members
    ]
    await started(plans, SERVER_THREADS)
    waiting = asyncio.create_task(planner.check(QUICK_TOO, (), MEMBER_A, guild_id=crowded))
    other = planner.check(QUICK, (), MEMBER_B, guild_id=OTHER_GUILD)
    assert await asyncio.wait_for(other, PATIENCE_S) == QUICK
    with pytest.raises(UserError) as refused:
        await planner.explain("quick", "", 2, MEMBER_A + 100, guild_id=crowded)
    assert str(refused.value) == server_readers_busy(crowded)
    if crowded is not None:  # a stored check counts against its job's server too
        with pytest.raises(UserError) as stored_refused:
            await planner.check_stored(ConditioningTexts(("a cat",)), ["dog"], guild_id=crowded)
        assert str(stored_refused.value) == server_readers_busy(crowded)
    assert not waiting.done() and plans.read == ["slow"] * SERVER_THREADS + ["quick"]
    plans.release.set()
    assert await asyncio.wait_for(waiting, PATIENCE_S) == QUICK_TOO
    assert await asyncio.gather(*slow) == [SLOW] * SERVER_THREADS


async def test_the_guild_policy_counts_a_plan_against_the_member_who_sent_it(
    plans: BlockingPlans, conn: aiosqlite.Connection
) -> None:
    policy = GuildPolicy(conn, prompts=PromptPlanner(None, budget_s=0.05))
    with pytest.raises(UserError, match="took longer"):
        await policy.admit(GUILD, None, False, SLOW, member_id=MEMBER_A)
    with pytest.raises(UserError, match="still being read"):
        await policy.admit(GUILD, None, False, QUICK, member_id=MEMBER_A)
    admitted = await policy.admit(GUILD, None, False, QUICK, member_id=MEMBER_B)
    assert admitted.request == QUICK


async def test_a_plan_cancelled_once_woken_hands_its_turn_to_the_next_in_line() -> None:
    """A plan's end wakes only the first plan waiting in its line; one whose budget ends
    after it was woken, before it ran, passes that turn on, or the next would wait for
    nothing until its own budget ends."""
    planner = PromptPlanner(None)
    line = ("server", GUILD)
    first = asyncio.create_task(planner._wait_in(line, None))
    second = asyncio.create_task(planner._wait_in(line, None))
    await asyncio.sleep(0)  # both wait in line
    planner._wake(line)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, PATIENCE_S) == line


async def test_a_plan_woken_for_a_servers_reader_but_held_by_its_members_hands_the_reader_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A's plan waits for the server's share; when a reader frees, A is still held by their
    own prompt read in another server: the freed reader goes to the next in the server's
    line at once, not when another of the server's plans ends."""
    gates = {prompt: threading.Event() for prompt in ("x1", "x2", "a elsewhere")}
    begun = {prompt: threading.Event() for prompt in gates}

    def gated(request: RenderRequest, *_rest: object) -> RenderRequest:
        if request.prompt in gates:
            begun[request.prompt].set()
            gates[request.prompt].wait(30)
        return request

    monkeypatch.setattr(prompt_safety, "plan_request", gated)
    planner = PromptPlanner(None, budget_s=60)

    def ask(prompt: str, member: int, guild: int) -> asyncio.Task[RenderRequest]:
        request = RenderRequest(prompt, seed=1, steps=2)
        return asyncio.create_task(planner.check(request, (), member, guild_id=guild))

    async def begins(prompt: str) -> None:
        assert await asyncio.to_thread(begun[prompt].wait, PATIENCE_S)

    try:
        assert SERVER_THREADS == 2
        held = [ask("x1", 10, GUILD), ask("x2", 11, GUILD)]
        await begins("x1")
        await begins("x2")
        a_here = ask("a here", MEMBER_A, GUILD)  # waits for the server's share
        await asyncio.sleep(0.05)
        a_elsewhere = ask("a elsewhere", MEMBER_A, OTHER_GUILD)
        await begins("a elsewhere")
        b_here = ask("b here", MEMBER_B, GUILD)
        await asyncio.sleep(0.05)
        gates["x1"].set()  # one of the server's readers frees; A is still held
        assert (await asyncio.wait_for(b_here, PATIENCE_S)).prompt == "b here"
        assert not a_here.done()
    finally:
        for gate in gates.values():
            gate.set()
    assert [plan.prompt for plan in await asyncio.gather(a_here, a_elsewhere, *held)] == [
        "a here",
        "a elsewhere",
        "x1",
        "x2",
    ]
