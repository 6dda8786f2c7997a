"""A request's prompt planned before its job is queued, off the event loop (pure: no discord,
no torch).

Planning at submit time refuses a bad prompt (an unknown wildcard, braces nested too deep, an
expansion past its limits, a banned word it renders) to its own member, privately and free,
before it can share a batch with anyone else's job; and moderation reads what the model will
be conditioned on, not what was typed. The prompt language is CPU work (a wildcard folder can
make a short prompt expensive), so it runs on a thread, with its expansion bounded by the
expander's own limits and its wait bounded by ``PLAN_BUDGET_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from bot.policy.moderation import find_banned_rendering
from bot.requests import check_prompt_length, random_seed
from bot.user_errors import Reason, UserError
from inference.prompts import PromptError, WildcardLibrary, build_plan, explain
from inference.types import RenderRequest

T = TypeVar("T")

# How long the prompt language may take before the request is refused: the answer (or the
# "thinking..." that defers it) must reach Discord within 3 s of the command.
PLAN_BUDGET_S = 2.5
# /explain answers after acknowledging, so it may take longer (still bounded: the thread goes on).
EXPLAIN_BUDGET_S = 10.0
# Planned once before the bot connects, so that no member's command pays for what the first plan
# loads: the CLIP vocabulary, the attention and schedule parsers, dynamicprompts' grammar.
WARM_UP_REQUEST = RenderRequest(
    "a (red:1.1) [cat:dog:0.5], {day|night} AND a hat", "blurry", seed=1, steps=2
)


def plan_request(
    request: RenderRequest, banned_words: Collection[str], wildcards_dir: Path | None
) -> RenderRequest:
    """Plan every picture's prompt as the engine will (same seeds, same wildcards) and refuse
    the request when the prompt language rejects it or a variant renders a banned word.

    Returns the request with a concrete seed (the expansion checked is the one rendered)."""
    check_prompt_length(request.prompt, "the prompt")
    check_prompt_length(request.negative_prompt, "the negative prompt")
    if request.seed == -1:
        request = dataclasses.replace(request, seed=random_seed())
    # As the engine reads them: no folder, no wildcards (``__name__`` stays as typed).
    has_folder = wildcards_dir is not None and wildcards_dir.is_dir()
    library = WildcardLibrary(wildcards_dir) if has_folder else None
    try:
        plans = [
            build_plan(
                request.prompt,
                request.negative_prompt,
                seed=request.seed + index,
                steps=request.steps,
                wildcards=library,
            )
            for index in range(request.count)
        ]
    except PromptError as error:
        raise UserError(f"{error}; fix the prompt and try again.") from None
    renderings = (rendering for plan in plans for rendering in plan.renderings())
    if word := find_banned_rendering(renderings, banned_words):
        raise UserError(
            f"The word {word!r} is banned on this server; remove it from your prompt.",
            Reason.BANNED_WORD,
        )
    return request


def explain_prompt(
    prompt: str, negative: str, steps: int | None, wildcards_dir: Path | None
) -> dict[str, Any]:
    """``/explain``: how the prompt is read, as the ``easel explain`` JSON."""
    check_prompt_length(prompt, "the prompt")
    check_prompt_length(negative, "the negative prompt")
    try:
        return explain(prompt, negative, steps=steps, wildcards_dir=wildcards_dir)
    except PromptError as error:
        raise UserError(f"{error}; fix the prompt and try again.") from None


class PromptPlanner:
    """The prompt work of the bot, each call on a worker thread within ``budget_s``."""

    def __init__(
        self,
        wildcards_dir: Path | None,
        budget_s: float = PLAN_BUDGET_S,
        explain_budget_s: float = EXPLAIN_BUDGET_S,
    ) -> None:
        self.wildcards_dir = wildcards_dir
        self.budget_s = budget_s
        self.explain_budget_s = explain_budget_s

    async def check(self, request: RenderRequest, banned_words: Collection[str]) -> RenderRequest:
        """``plan_request`` off the event loop."""
        return await self._off_loop(
            self.budget_s, plan_request, request, banned_words, self.wildcards_dir
        )

    async def warm_up(self) -> None:
        """Load what the first plan would (see ``WARM_UP_REQUEST``), off the event loop."""
        await asyncio.to_thread(plan_request, WARM_UP_REQUEST, (), self.wildcards_dir)

    async def explain(self, prompt: str, negative: str, steps: int | None) -> dict[str, Any]:
        """``explain_prompt`` off the event loop."""
        return await self._off_loop(
            self.explain_budget_s, explain_prompt, prompt, negative, steps, self.wildcards_dir
        )

    @staticmethod
    async def _off_loop(budget_s: float, function: Callable[..., T], *args: Any) -> T:
        # The thread cannot be stopped; the expander's limits bound how long it goes on.
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args), budget_s)
        except TimeoutError:
            raise UserError(
                f"Reading this prompt took longer than {budget_s:g} s; simplify it (fewer "
                "wildcards, choices or schedules)."
            ) from None
