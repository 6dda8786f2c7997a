"""A picture of an age-restricted channel stays in those channels, whichever way it travels."""

from __future__ import annotations

import itertools

import pytest

from bot.policy.moderation import (
    AGE_RESTRICTED_PICTURE,
    NsfwPolicy,
    check_age_restriction_kept,
    check_repost,
)
from bot.user_errors import Reason, UserError


@pytest.mark.parametrize(("source", "here"), itertools.product([False, True], repeat=2))
def test_only_an_age_restricted_picture_outside_those_channels_is_refused(
    source: bool, here: bool
) -> None:
    if source and not here:
        with pytest.raises(UserError, match="age-restricted") as refused:
            check_age_restriction_kept(source_age_restricted=source, here_age_restricted=here)
        assert refused.value.reason is Reason.NSFW
    else:
        check_age_restriction_kept(source_age_restricted=source, here_age_restricted=here)


@pytest.mark.parametrize("policy", list(NsfwPolicy))
def test_show_keeps_the_servers_age_restricted_only_policy(policy: NsfwPolicy) -> None:
    """Where the server renders only in age-restricted channels, every picture came from one."""
    check_repost(made_age_restricted=False, here_age_restricted=True, nsfw_policy=policy)
    if policy is NsfwPolicy.AGE_RESTRICTED_ONLY:
        with pytest.raises(UserError, match=AGE_RESTRICTED_PICTURE[:40]):
            check_repost(made_age_restricted=False, here_age_restricted=False, nsfw_policy=policy)
    else:
        check_repost(made_age_restricted=False, here_age_restricted=False, nsfw_policy=policy)
