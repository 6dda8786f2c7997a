"""Words several replies share, so each says a thing the same way."""

from __future__ import annotations

from bot.jobs.queue import CancelOutcome, StoppedBy

# Bot-side texts count their nouns too (the bot may not import cogs).
from bot.user_errors import counted as counted

# What stands for the prompt of a job made without one (an /upscale of an upload).
NO_PROMPT = "(no prompt)"
# A picture its member stopped while it shares the device with others' pictures (one call
# renders them all): /cancel's answer and the Cancel button's, given once its end is written.
_SHARING_THE_DEVICE = (
    "your picture was sharing the device with other pictures, so it stops being shown now"
)
STOPPED_BESIDE_OTHERS = (
    f"{_SHARING_THE_DEVICE}; you pay only for the GPU time until now, and get no pictures."
)
# Its progress message's, edited at once, before that end is written: a stop imposed
# meanwhile (a ban's) makes it free, so no charge is promised.
STOPPING_BESIDE_OTHERS = (
    f"{_SHARING_THE_DEVICE}, and you get no pictures; you pay at most for the GPU time until now."
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

# How /queue shows a job stopped whose end is not written yet (``JobState.stopping``), by who
# stopped it where known: the journal lists it still, for minutes on a busy database, and a
# member's own cancel it refuses renders after all, so it promises no outcome.
_STOPPING_LINES = {
    StoppedBy.MEMBER: "stopping… (your cancel)",
    StoppedBy.MODERATOR: "stopping… (stopped by a moderator or an admin)",
    StoppedBy.IMPOSED: "stopping… (stopped by this server's moderation or rules)",
    None: "stopping…",
}


def cancel_answer(outcome: CancelOutcome, job_id: str) -> str:
    """What the member who cancelled job ``job_id`` is told of ``outcome`` (not an imposed
    stop's ``BEING_CANCELLED``, which no member's cancel returns)."""
    return _CANCEL_ANSWERS[outcome].format(job_id)


def stopping_line(stopped_by: StoppedBy | None) -> str:
    """/queue's line for a job stopping, its end not written yet, stopped by ``stopped_by``
    (None: not known)."""
    return _STOPPING_LINES[stopped_by]
