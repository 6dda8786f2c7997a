"""Words several replies share, so each says a thing the same way."""

from __future__ import annotations

from bot.jobs.queue import CancelOutcome

# Bot-side texts count their nouns too (the bot may not import cogs).
from bot.user_errors import counted as counted

# What stands for the prompt of a job made without one (an /upscale of an upload).
NO_PROMPT = "(no prompt)"
# A picture its member stopped while it shares the device with others' pictures (one call
# renders them all): /cancel's answer, the Cancel button's and its progress message's.
STOPPED_BESIDE_OTHERS = (
    "your picture was sharing the device with other pictures, so it stops being shown now; "
    "you pay only for the GPU time until now, and get no pictures."
)

# What a member's cancel answers, /cancel's and the Cancel button's alike (``cancel_answer``).
_CANCEL_ANSWERS = {
    CancelOutcome.CANCELLED: "Cancelled job `{}`; nothing was charged.",
    CancelOutcome.STOPPING: (
        "Job `{}` stops at the next step: you pay only for the GPU time used, no pictures."
    ),
    CancelOutcome.STOPPED_IN_BATCH: "Stopped job `{}`: " + STOPPED_BESIDE_OTHERS,
    # Alone on its device it stops at the next step; beside others' pictures, at once for you.
    CancelOutcome.STOPPING_FREE: "Stopped job `{}`; nothing is charged.",
    # The Cancel button asks a moderator's stop instead (``cogs.results.buttons``).
    CancelOutcome.NOT_YOURS: "Job `{}` is not yours; only its owner or an admin can cancel it.",
    CancelOutcome.FINISHED: "Too late: job `{}` has already finished.",
    # A typed id of no job here, or a job erased since its button was posted.
    CancelOutcome.UNKNOWN: "There is no job `{}` here; `/queue` lists yours.",
}


def cancel_answer(outcome: CancelOutcome, job_id: str) -> str:
    """What the member who cancelled job ``job_id`` is told of ``outcome`` (not an imposed
    stop's ``BEING_CANCELLED``, which no member's cancel returns)."""
    return _CANCEL_ANSWERS[outcome].format(job_id)
