"""Where Easel may post what it makes for a member: Use Application Commands always, and for
a result everyone sees what posting a picture there takes (in a thread: Send Messages in
Threads); a private result needs no more."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import pytest

from bot.policy.visibility import (
    NO_COMMANDS_HERE,
    NO_MESSAGES_HERE,
    NO_PICTURES_HERE,
    PostingRights,
    why_may_not_act,
)
from cogs.visibility import why_member_may_not_act_in


def test_a_public_result_names_each_permission_the_member_lacks() -> None:
    lacks_all = PostingRights(True, send_messages=False, attach_files=False, in_thread=True)
    assert why_may_not_act(lacks_all, private=False) == NO_PICTURES_HERE.format(
        "Send Messages in Threads and Attach Files"
    )
    no_files = PostingRights(True, send_messages=True, attach_files=False, in_thread=False)
    assert why_may_not_act(no_files, private=False) == NO_PICTURES_HERE.format("Attach Files")
    assert why_may_not_act(lacks_all, private=True) is None
    allowed = PostingRights(True, send_messages=True, attach_files=True, in_thread=False)
    assert why_may_not_act(allowed, private=False) is None


def test_an_answer_of_text_alone_needs_send_messages_not_attach_files() -> None:
    no_files = PostingRights(True, send_messages=True, attach_files=False, in_thread=False)
    assert why_may_not_act(no_files, private=False, text_only=True) is None
    read_only = PostingRights(True, send_messages=False, attach_files=False, in_thread=True)
    assert why_may_not_act(read_only, private=False, text_only=True) == NO_MESSAGES_HERE.format(
        "Send Messages in Threads"
    )


def test_use_application_commands_is_needed_even_for_a_private_result() -> None:
    timed_out = PostingRights(False, send_messages=False, attach_files=False, in_thread=False)
    assert why_may_not_act(timed_out, private=True) == NO_COMMANDS_HERE


@pytest.mark.parametrize(
    ("channel_type", "refusal"),
    [
        (discord.ChannelType.public_thread, None),
        (discord.ChannelType.text, NO_PICTURES_HERE.format("Send Messages")),
    ],
)
def test_in_a_thread_send_messages_in_threads_counts_not_send_messages(
    channel_type: discord.ChannelType, refusal: str | None
) -> None:
    """The mask editor's submit reads the cached channel's permissions for the member."""
    permissions = discord.Permissions(
        use_application_commands=True, send_messages_in_threads=True, attach_files=True
    )
    channel = SimpleNamespace(type=channel_type, permissions_for=lambda member: permissions)
    assert why_member_may_not_act_in(channel, object(), private=False) == refusal
