"""Each rule of a server refuses with its own reason code (what the dashboard counts), and the
error handler maps Discord's check failures to theirs; internal errors are no refusal."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from discord import app_commands

from bot.policy.moderation import NsfwPolicy, check_request
from bot.policy.prompt_safety import plan_request
from bot.policy.visibility import ChannelAccess, check_member_may_read
from bot.refusals import told_refusal
from bot.requests import RequestError
from bot.user_errors import Reason, UserError
from bot.web.links import LinkRefused
from cogs.errors import permission_names, refusal_of
from inference.types import RenderRequest


def request_checked(**rules: object) -> Callable[[], None]:
    def check() -> None:
        given: dict[str, object] = {
            "model": "tiny",
            "channel_id": 1,
            "channel_is_age_restricted": False,
            "allowed_channels": (),
            "allowed_models": (),
            "nsfw_policy": NsfwPolicy.ALLOW,
        }
        check_request(**{**given, **rules})  # type: ignore[arg-type]

    return check


@pytest.mark.parametrize(
    ("refuse", "reason"),
    [
        (request_checked(allowed_channels={2}), Reason.CHANNEL),
        (request_checked(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY), Reason.NSFW),
        (request_checked(allowed_models={"other"}), Reason.MODEL),
        (
            lambda: plan_request(RenderRequest("a red cat", seed=1, steps=2), {"cat"}, None),
            Reason.BANNED_WORD,
        ),
        (lambda: check_member_may_read(ChannelAccess(True, True, False)), Reason.PERMISSION),
    ],
)
def test_each_rule_refuses_with_its_reason(refuse: Callable[[], object], reason: Reason) -> None:
    with pytest.raises(UserError) as refused:
        refuse()
    assert refused.value.reason is reason
    assert refusal_of(refused.value) == (str(refused.value), reason)


def test_the_error_handler_names_the_reason_and_leaves_internal_errors_out() -> None:
    assert refusal_of(UserError("Nothing to show.")) == ("Nothing to show.", Reason.INPUT)
    # Parsers write their texts to be quoted too: the member reads each as a sentence.
    assert refusal_of(RequestError("steps must be between 1 and 150, not 151")) == (
        "Steps must be between 1 and 150, not 151.",
        Reason.INPUT,
    )
    assert refusal_of(UserError("--ar is given twice; keep one")) == (
        "--ar is given twice; keep one.",
        Reason.INPUT,
    )
    assert refusal_of(UserError("did you mean `x`?")) == ("Did you mean `x`?", Reason.INPUT)
    # An option's name keeps the spelling the member types it in.
    assert refusal_of(UserError("sref_strength needs a picture")) == (
        "sref_strength needs a picture.",
        Reason.INPUT,
    )
    missing = app_commands.MissingPermissions(["manage_guild"])
    assert refusal_of(missing) == (
        "You need the Manage Server permission to use this; ask a server admin.",
        Reason.PERMISSION,
    )
    # Named as Discord's client names them, where members and admins look for them.
    assert permission_names(["manage_messages", "manage_guild"]) == "Manage Messages, Manage Server"
    assert refusal_of(RuntimeError("a bug")) is None


def test_a_links_refusal_is_worded_and_kept_as_any_refusal() -> None:
    """A mask-editor or dashboard link's refusal reaches the member as a sentence (its page,
    its form's answer) and the server's dashboard under its reason, as every refusal does:
    one built from a rule's text keeps that rule's reason."""
    refused = LinkRefused("you can no longer see the channel this picture was made in")
    assert str(refused) == "You can no longer see the channel this picture was made in."
    assert refusal_of(refused) == (str(refused), Reason.PERMISSION)
    banned_since = LinkRefused("the word 'cat' is banned here now", Reason.BANNED_WORD)
    assert refusal_of(banned_since) == ("The word 'cat' is banned here now.", Reason.BANNED_WORD)


def test_a_repeats_refusal_is_a_sentence_after_its_number_as_any_refusal() -> None:
    """A --repeat's later job refused is told "⛔ Repeat i of n: " and then the refusal as a
    sentence, as the first job's (``refusal_of``) is: a parser's lower-case text included."""
    told = told_refusal("bad value 'x' for --ar: expected W:H", Reason.INPUT, of="Repeat 2 of 3")
    assert str(told) == "⛔ Repeat 2 of 3: Bad value 'x' for --ar: expected W:H."
    alone = UserError("bad value 'x' for --ar: expected W:H")
    assert str(told).endswith(f": {refusal_of(alone)[0]}")  # type: ignore[index]
    assert told.reason is Reason.INPUT
