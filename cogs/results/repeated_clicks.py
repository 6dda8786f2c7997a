"""A member's second click of the same button under the same message while the first is being
answered, or within a few seconds after it was (a double click, a slow client), is told so
instead of posting the picture or sending the copy twice. A click that was refused or failed
is forgotten at once: clicking again is how a member retries. Only for buttons that do one
thing again (U1-U4, DM me): a charged one (V, 🔄, Upscale) may be clicked twice on purpose,
and its second job is charged and shown as such."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import discord

REPEAT_WINDOW_S = 3.0
ALREADY_ANSWERING = "You clicked this a moment ago; that click is answered, or being answered."

Click = tuple[int, str, int]  # message, custom_id, member
Button = TypeVar("Button")


class RecentClicks:
    """The clicks being answered, and those answered in the last ``window_s`` seconds."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._answering: set[Click] = set()
        self._answered: dict[Click, float] = {}  # oldest first: dicts keep their order

    def begin(self, click: Click) -> bool:
        """Whether ``click`` repeats none being answered or answered within the window;
        if so it is being answered from now (``end`` it)."""
        now = self._clock()
        while self._answered and now - next(iter(self._answered.values())) >= self._window_s:
            del self._answered[next(iter(self._answered))]
        if click in self._answering or click in self._answered:
            return False
        self._answering.add(click)
        return True

    def end(self, click: Click, *, answered: bool) -> None:
        """``click`` was answered (a repeat within the window is caught), or not (refused or
        failed: forgotten)."""
        self._answering.discard(click)
        if answered:
            self._answered[click] = self._clock()


_RECENT = RecentClicks(REPEAT_WINDOW_S)


# A button's run that returns whether it did what was asked: False for a refusal it answers
# itself (DM me with the member's direct messages closed), which a retry must not meet.
Answers = Callable[[Button, discord.Interaction[Any]], Coroutine[Any, Any, bool]]
Run = Callable[[Button, discord.Interaction[Any]], Coroutine[Any, Any, None]]


def answered_once(run: Answers[Button]) -> Run[Button]:
    """For a button's ``run``: a repeated click (see the module) is answered privately that
    it is, and not run."""

    @functools.wraps(run)
    async def guarded(button: Button, interaction: discord.Interaction[Any]) -> None:
        message_id = interaction.message.id if interaction.message is not None else 0
        data = interaction.data
        custom_id = "" if data is None else str(data.get("custom_id", ""))
        click = (message_id, custom_id, interaction.user.id)
        if not _RECENT.begin(click):
            await interaction.response.send_message(ALREADY_ANSWERING, ephemeral=True)
            return
        answered = False
        try:
            answered = await run(button, interaction)
        finally:
            _RECENT.end(click, answered=answered)

    return guarded
