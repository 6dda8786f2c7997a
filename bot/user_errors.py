"""The one exception type for a member's mistake, and why it was refused (pure: no discord,
no torch)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a member was refused: what the admin dashboard counts and the metrics label."""

    INPUT = "input"  # a value out of range, a prompt that cannot be read, a missing picture...
    BANNED_WORD = "banned_word"
    CHANNEL = "channel"  # Easel is not enabled in that channel
    NSFW = "nsfw"  # the server renders only in age-restricted channels
    MODEL = "model"  # a model the server does not allow
    LIMITS = "limits"  # the server's render limits (steps, pixels...)
    QUOTA = "quota"
    QUEUE = "queue"  # the member's jobs waiting or running passed EASEL_MAX_QUEUED_PER_MEMBER
    PERMISSION = "permission"  # a command for admins, a picture the member cannot read
    COOLDOWN = "cooldown"
    # Not the member's doing, each read by a delivery to decide (bot.policy.delivery):
    BUSY = "busy"  # every prompt reader taken, or the member's previous prompt still read
    UNCHECKED = "unchecked"  # a stored picture's texts too long to check against the words now
    CLOSED = "closed"  # Easel is shutting down
    # Discord failed (an error answer, no answer) when asked something a check needs: counted,
    # never kept as the member's refusal on the dashboard (``bot.refusals.RefusalLog``).
    DISCORD = "discord"


class UserError(Exception):
    """Refused input: the message is one sentence naming the problem and how to fix it."""

    def __init__(self, message: str, reason: Reason = Reason.INPUT) -> None:
        super().__init__(message)
        self.reason = reason


def counted(count: int, noun: str) -> str:
    """ "1 job", "2 jobs": a count and its noun, plural unless the count is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def as_sentence(text: str) -> str:
    """``text`` as a member reads a refusal: a sentence, its first letter capitalised and an
    end mark after it. Refusals come from many parsers (the prompt language, the request's
    options, pasted settings), each written to be quoted inside another text as well."""
    if not text:
        return text
    first_word = text.split(maxsplit=1)[0]
    # An option's own name (``sref_strength``) keeps its spelling: the member types it so.
    if text[0].islower() and "_" not in first_word:
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else f"{text}."
