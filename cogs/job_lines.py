"""A job as one line of a list (/history, a moderator's ``/easel-mod jobs``)."""

from __future__ import annotations

from bot.history import HistoryLine
from bot.policy.moderation import WITHHELD_BECAUSE
from bot.restores import LOST_IN_A_RESTORE
from bot.shown_text import shortened
from cogs.common import shown_prompt
from cogs.wording import NO_PROMPT, counted

_PROMPT_PREVIEW = 80
# A withheld job's reason, as its maker's own list shows it (a model's name may make it long):
# five of them on a page leave it room under Discord's 2,000 characters.
_WHY_PREVIEW = 120


def history_line_text(line: HistoryLine) -> str:
    """One job of a list: its id, when, its state and its prompt, cut short and escaped."""
    # A withdrawn job's pictures cannot be shown again: not offered as if they could.
    if line.withheld:  # why, on its maker's own list (told them by DM)
        why = shortened(line.withheld_why or WITHHELD_BECAUSE, _WHY_PREVIEW)
        state = f"not posted: {why}; not counted"
    elif line.withdrawn:
        state = "removed by a moderator"
    elif line.lost_in_a_restore:
        state = f"{line.status}: {LOST_IN_A_RESTORE}; not counted"
    else:
        state = f"{line.status}, {counted(line.image_count, 'image')}"
    # A job made from an upload alone (an /upscale) has no prompt to quote.
    shown = shown_prompt(line.prompt, _PROMPT_PREVIEW) or NO_PROMPT
    return f"`{line.job_id}` <t:{int(line.created_at)}:R> {state} — {shown}"
