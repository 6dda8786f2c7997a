"""Which message Easel may read for a member: same server (or same DM), a channel they can read."""

from __future__ import annotations

import pytest

from bot.policy.visibility import (
    DIRECT_MESSAGE,
    NOT_READABLE,
    OTHER_SERVER,
    OUTSIDE_THIS_DM,
    ChannelAccess,
    MessageLocation,
    Place,
    check_member_may_read,
    locate_message,
    must_ask_thread_membership,
)
from bot.user_errors import UserError

GUILD = 111111111111111111
OTHER_GUILD = 222222222222222222
CHANNEL = 333333333333333333
OTHER_CHANNEL = 444444444444444444
MESSAGE = 555555555555555555
IN_SERVER = Place(GUILD, CHANNEL)
IN_DM = Place(None, CHANNEL)


def link(guild: int | str, channel: int) -> str:
    return f"https://discord.com/channels/{guild}/{channel}/{MESSAGE}"


def test_links_and_ids_in_the_same_server_are_located() -> None:
    assert locate_message(link(GUILD, OTHER_CHANNEL), IN_SERVER) == MessageLocation(
        OTHER_CHANNEL, MESSAGE
    )
    assert locate_message(f" {MESSAGE} ", IN_SERVER) == MessageLocation(CHANNEL, MESSAGE)
    assert locate_message(link("@me", CHANNEL), IN_DM) == MessageLocation(CHANNEL, MESSAGE)
    assert locate_message(str(MESSAGE), IN_DM) == MessageLocation(CHANNEL, MESSAGE)


@pytest.mark.parametrize(
    ("reference", "where", "refusal"),
    [
        (link(OTHER_GUILD, OTHER_CHANNEL), IN_SERVER, OTHER_SERVER),
        (link("@me", OTHER_CHANNEL), IN_SERVER, DIRECT_MESSAGE),
        (link("@me", OTHER_CHANNEL), IN_DM, OUTSIDE_THIS_DM),  # someone else's DM
        (link(GUILD, CHANNEL), IN_DM, OUTSIDE_THIS_DM),
    ],
)
def test_messages_elsewhere_are_refused(reference: str, where: Place, refusal: str) -> None:
    with pytest.raises(UserError) as refused:
        locate_message(reference, where)
    assert str(refused.value) == refusal


def test_a_reference_that_is_no_link_names_the_fix() -> None:
    with pytest.raises(UserError, match="Copy Message Link"):
        locate_message("the fox one", IN_SERVER)


@pytest.mark.parametrize(
    "access",
    [
        ChannelAccess(in_this_server=False, view_channel=True, read_message_history=True),
        ChannelAccess(in_this_server=True, view_channel=False, read_message_history=True),
        ChannelAccess(in_this_server=True, view_channel=True, read_message_history=False),
        ChannelAccess(True, True, True, thread_member=False),  # a private thread, not added
    ],
)
def test_the_member_needs_view_and_history_in_a_channel_of_this_server(
    access: ChannelAccess,
) -> None:
    with pytest.raises(UserError) as refused:
        check_member_may_read(access)
    assert str(refused.value) == NOT_READABLE
    check_member_may_read(ChannelAccess(True, True, True))


def test_only_a_private_thread_asks_who_was_added_unless_the_member_manages_threads() -> None:
    assert must_ask_thread_membership(private_thread=True, manage_threads=False)
    assert not must_ask_thread_membership(private_thread=True, manage_threads=True)
    assert not must_ask_thread_membership(private_thread=False, manage_threads=False)


def test_a_bare_id_where_there_is_no_channel_asks_for_the_link() -> None:
    with pytest.raises(UserError, match="Give the full message link"):
        locate_message(str(MESSAGE), Place(GUILD, None))
