"""A plan nobody waits for stops holding its planning thread (bot.policy.prompt_safety,
inference.prompts.stopping): refused past its budget, or cut off by the bot's close, it ends
at the prompt language's next checkpoint, so four members' costly prompts free the four
threads soon after their refusals instead of reading on for seconds.

Costly plans are stood in for by loops that pass a checkpoint until the test lets them go
(never, here): the tests wait on events and count, never time real planning."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.policy import prompt_safety
from bot.policy.prompt_safety import CLOSED, PLAN_THREADS, PromptPlanner
from bot.requests import MAX_PROMPT_CHARS
from bot.user_errors import UserError
from inference.prompts import WildcardLibrary, expand_prompt
from inference.prompts import plan as prompt_plan
from inference.prompts.stopping import PlanStopped, checkpoint, stopping_when
from inference.types import RenderRequest

ENDLESS = "endless"
QUICK = RenderRequest("quick", seed=1, steps=2)
# Far above what a free thread takes; reached only when a thread is never freed.
PATIENCE_S = 10.0


class EndlessPlans:
    """``plan_request`` where a prompt starting "endless" passes checkpoints until
    ``release`` is set, as the prompt language does between its units of work."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.stopped = threading.Semaphore(0)  # one per endless plan that ended at a checkpoint
        self.finished: list[str] = []  # prompts planned to the end

    def __call__(
        self,
        request: RenderRequest,
        banned_words: Collection[str],
        wildcards_dir: Path | None,
        *_addons: object,
    ) -> RenderRequest:
        if request.prompt.startswith(ENDLESS):
            self.started.release()
            try:
                while not self.release.wait(0.001):
                    checkpoint()
            except PlanStopped:
                self.stopped.release()
                raise
        self.finished.append(request.prompt)
        return request


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> Iterator[EndlessPlans]:
    endless = EndlessPlans()
    monkeypatch.setattr(prompt_safety, "plan_request", endless)
    yield endless
    endless.release.set()  # no thread outlives the test


async def acquired(semaphore: threading.Semaphore, times: int) -> bool:
    for _ in range(times):
        if not await asyncio.to_thread(semaphore.acquire, True, PATIENCE_S):
            return False
    return True


async def test_four_costly_plans_past_their_budget_free_every_thread_for_a_cheap_one(
    plans: EndlessPlans,
) -> None:
    # Long enough for a thread to start on a loaded machine (else: READERS_BUSY).
    planner = PromptPlanner(None, budget_s=1.0)
    costly = [
        asyncio.create_task(
            planner.check(RenderRequest(f"{ENDLESS} {member}"), (), member, guild_id=member)
        )
        for member in range(PLAN_THREADS)
    ]
    assert await acquired(plans.started, PLAN_THREADS)  # every reader taken
    for refused in await asyncio.gather(*costly, return_exceptions=True):
        assert isinstance(refused, UserError) and "took longer than 1 s" in str(refused)
    # Never released: each ended at a checkpoint once its member was refused.
    assert await acquired(plans.stopped, PLAN_THREADS)
    assert not plans.release.is_set()
    assert await planner.check(QUICK, (), PLAN_THREADS + 1, guild_id=PLAN_THREADS + 1) == QUICK
    assert plans.finished == ["quick"]


async def test_a_costly_real_prompt_stops_planning_soon_after_its_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The prompt language itself: a prompt with a distinct text at each of 150 steps for each
    of 4 pictures, refused at its budget, stops before it has weighted its 1,200 texts."""
    weighted: list[str] = []
    chunks = prompt_plan._weighted_chunks

    def counted(text: str, tokenizer: Any) -> Any:
        weighted.append(text)
        return chunks(text, tokenizer)

    monkeypatch.setattr(prompt_plan, "_weighted_chunks", counted)
    # Its 150 texts of 14 chunks are over the cap on a prompt's chunks (refused once its first
    # picture's prompt is planned, before the budget on a fast machine): lifted, so the budget
    # is what stops it.
    monkeypatch.setattr(prompt_plan, "MAX_SCHEDULED_CHUNKS", 150 * 150)
    # A schedule ending at each step and a {a|b} choice per picture, up to the length cap.
    parts = [f"[s{index}:g{index}:{index % 149 + 1}] {{a{index}|b{index}}}" for index in range(150)]
    prompt = " ".join(parts)
    assert len(prompt) <= MAX_PROMPT_CHARS
    request = RenderRequest(prompt, negative_prompt=prompt, seed=1, steps=150, count=4)
    planner = PromptPlanner(None, budget_s=0.5)
    with pytest.raises(UserError, match=r"took longer than 0\.5 s"):
        await planner.check(request, (), 1, guild_id=1)
    for _ in range(int(PATIENCE_S * 100)):  # the member is free once the thread ends
        if not planner._reading:
            break
        await asyncio.sleep(0.01)
    assert not planner._reading
    all_texts = 2 * 4 * 150  # the prompt and the negative, 4 pictures, 150 steps
    assert len(weighted) < all_texts


async def test_a_closed_planner_stops_what_it_reads_and_takes_no_more(
    plans: EndlessPlans,
) -> None:
    planner = PromptPlanner(None, budget_s=60)
    reading = asyncio.create_task(planner.check(RenderRequest(ENDLESS), (), 1, guild_id=1))
    assert await acquired(plans.started, 1)
    planner.close()
    with pytest.raises(UserError) as refused:
        await reading
    assert str(refused.value) == CLOSED
    assert await acquired(plans.stopped, 1)
    with pytest.raises(UserError) as refused:
        await planner.check(QUICK, (), 2, guild_id=2)
    assert str(refused.value) == CLOSED
    with pytest.raises(RuntimeError, match="after shutdown"):
        planner._threads.submit(print)
    assert plans.finished == []


async def test_a_plan_still_queued_when_the_planner_closes_is_answered(
    plans: EndlessPlans,
) -> None:
    """Every reader busy, a fifth member's plan waits for one; the close drops it from the
    queue, and its member is told why instead of the waiting task being cancelled."""
    planner = PromptPlanner(None, budget_s=60)
    busy = [
        asyncio.create_task(
            planner.check(RenderRequest(f"{ENDLESS} {member}"), (), member, guild_id=member)
        )
        for member in range(PLAN_THREADS)
    ]
    assert await acquired(plans.started, PLAN_THREADS)
    queued_member = PLAN_THREADS + 1
    queued = asyncio.create_task(planner.check(QUICK, (), queued_member, guild_id=queued_member))
    for _ in range(int(PATIENCE_S * 100)):  # submitted to the busy readers
        if queued_member in planner._reading:
            break
        await asyncio.sleep(0.01)
    assert queued_member in planner._reading
    planner.close()
    for refused in await asyncio.gather(*busy, queued, return_exceptions=True):
        assert isinstance(refused, UserError) and str(refused) == CLOSED
    assert await acquired(plans.stopped, PLAN_THREADS)
    assert plans.finished == []


def test_a_wildcard_expansion_stops_at_its_checkpoint(tmp_path: Path) -> None:
    """Each wildcard value drawn passes a checkpoint: a plan nobody waits for any more stops
    there, however many wildcards its prompt still has to expand."""
    (tmp_path / "color.txt").write_text("red\nblue\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    prompt = "a __color__ barn"
    assert stopping_when(threading.Event(), expand_prompt, prompt, 1, library)[0].text in {
        "a red barn",
        "a blue barn",
    }
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(PlanStopped):
        stopping_when(stopped, expand_prompt, prompt, 1, library)
