"""Guild rules on a request (bot.moderation), without Discord."""

from __future__ import annotations

from typing import Any

import pytest

from bot.moderation import NsfwPolicy, check_request, find_banned_word
from bot.user_errors import UserError


def rules(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "prompt": "a cat",
        "negative": "",
        "model": None,
        "channel_id": 1,
        "channel_is_age_restricted": False,
        "allowed_channels": set(),
        "allowed_models": set(),
        "banned_words": set(),
        "nsfw_policy": NsfwPolicy.ALLOW,
    }
    return base | overrides


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("An UGLY dog", "ugly"),
        ("uglyish dog", None),
        ("(ugly:1.3)", "ugly"),
        ("a big bad wolf", "bad wolf"),
        ("a big bad wolfhound", None),
    ],
)
def test_banned_words_match_whole_words_in_any_case(text: str, found: str | None) -> None:
    assert find_banned_word([text], {"ugly", "bad wolf"}) == found


def test_everything_is_allowed_by_default() -> None:
    check_request(**rules())


def test_banned_word_in_the_negative_prompt_is_refused_too() -> None:
    with pytest.raises(UserError, match="'gore' is banned"):
        check_request(**rules(negative="no GORE", banned_words={"gore"}))


def test_channel_and_model_lists() -> None:
    with pytest.raises(UserError, match="not enabled in this channel; use it in <#2>"):
        check_request(**rules(allowed_channels={2}))
    check_request(**rules(allowed_channels={1, 2}))
    with pytest.raises(UserError, match="choose one of: a, b"):
        check_request(**rules(model="c", allowed_models={"b", "a"}))
    check_request(**rules(model="a", allowed_models={"a"}))


def test_age_restricted_only_policy() -> None:
    with pytest.raises(UserError, match="age-restricted"):
        check_request(**rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY))
    check_request(
        **rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY, channel_is_age_restricted=True)
    )
