"""Guild rules applied to a request before it is queued (pure: no discord, no torch)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from enum import StrEnum

from bot.user_errors import UserError


class NsfwPolicy(StrEnum):
    ALLOW = "allow"
    SPOILER = "spoiler"  # results are posted behind a spoiler
    AGE_RESTRICTED_ONLY = "age_restricted_only"  # generation only in age-restricted channels


def find_banned_word(texts: Iterable[str], banned: Collection[str]) -> str | None:
    """The first banned word or phrase found as a whole word (any case), or None."""
    for word in sorted(banned):
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
        if any(pattern.search(text) for text in texts):
            return word
    return None


def check_request(
    *,
    prompt: str,
    negative: str,
    model: str | None,
    channel_id: int | None,
    channel_is_age_restricted: bool,
    allowed_channels: Collection[int],
    allowed_models: Collection[str],
    banned_words: Collection[str],
    nsfw_policy: NsfwPolicy,
) -> None:
    """Raise ``UserError`` when the guild's rules refuse this request; empty lists allow all."""
    if allowed_channels and channel_id not in allowed_channels:
        where = ", ".join(f"<#{channel}>" for channel in sorted(allowed_channels))
        raise UserError(f"Easel is not enabled in this channel; use it in {where}.")
    if nsfw_policy is NsfwPolicy.AGE_RESTRICTED_ONLY and not channel_is_age_restricted:
        raise UserError(
            "This server allows generation only in age-restricted channels; use one of those."
        )
    if model is not None and allowed_models and model not in allowed_models:
        names = ", ".join(sorted(allowed_models))
        raise UserError(f"Model {model!r} is not allowed on this server; choose one of: {names}.")
    if word := find_banned_word((prompt, negative), banned_words):
        raise UserError(f"The word {word!r} is banned on this server; remove it from your prompt.")
