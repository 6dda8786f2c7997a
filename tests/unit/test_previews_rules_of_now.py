"""A job's progress previews follow the rules of now, read at each edit (as its result does at
delivery): a server that spoilers its pictures, or banned a word, since the job was submitted
gets them behind a spoiler; one that renders in age-restricted channels only now, or a maker
who turned private results on since their response went public, gets none, and a preview
already shown under looser rules goes at the next edit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import discord
import pytest

from bot.policy.delivery import PreviewShown, preview_shown
from bot.policy.moderation import NsfwPolicy
from cogs.results.progress import _Watched

OPEN, SPOILERED, HIDDEN = PreviewShown.OPEN, PreviewShown.SPOILERED, PreviewShown.HIDDEN


@pytest.mark.parametrize(
    ("nsfw_policy", "made_age_restricted", "banned_since", "private_since", "shown"),
    [
        (NsfwPolicy.ALLOW, False, False, False, OPEN),
        (NsfwPolicy.SPOILER, False, False, False, SPOILERED),
        (NsfwPolicy.ALLOW, False, True, False, SPOILERED),
        (NsfwPolicy.AGE_RESTRICTED_ONLY, False, False, False, HIDDEN),
        (NsfwPolicy.AGE_RESTRICTED_ONLY, True, False, False, OPEN),  # made in such a channel
        (NsfwPolicy.ALLOW, True, False, False, OPEN),
        (NsfwPolicy.SPOILER, False, False, True, HIDDEN),
    ],
)
def test_the_rules_of_now_decide_how_a_preview_is_shown(
    nsfw_policy: NsfwPolicy,
    made_age_restricted: bool,
    banned_since: bool,
    private_since: bool,
    shown: PreviewShown,
) -> None:
    assert (
        preview_shown(
            nsfw_policy=nsfw_policy,
            made_age_restricted=made_age_restricted,
            banned_since=banned_since,
            private_since=private_since,
        )
        is shown
    )


class _Followup:
    """An interaction's webhook: records each edit's attachments (None: left as they were;
    else whether each file is spoilered)."""

    def __init__(self) -> None:
        self.attachments: list[list[bool] | None] = []

    async def edit_message(self, message_id: Any, *, attachments: Any, **fields: Any) -> Any:
        kept = attachments is discord.utils.MISSING
        self.attachments.append(None if kept else [file.spoiler for file in attachments])
        return discord.Object(1)


async def _nothing(*_: Any) -> None:
    return None


def _watched_through(
    followup: _Followup, spoiler: bool, shown_now: Callable[[], Awaitable[PreviewShown]]
) -> _Watched:
    """A live token's progress message of a job spoilered at submit or not (``spoiler``)."""
    return _Watched(
        cast(discord.Webhook, followup),
        lambda: True,
        spoiler,
        on_deleted=_nothing,
        on_landed=_nothing,
        shown_now=shown_now,
    )


async def test_each_edit_reads_the_rules_of_now() -> None:
    followup, rules = _Followup(), [OPEN]

    async def shown_now() -> PreviewShown:
        if not rules:
            raise RuntimeError("the database is closed")
        return rules[0]

    watched = _watched_through(followup, False, shown_now)

    async def edit(preview: bytes | None = None) -> None:
        watched.preview = preview
        watched.schedule("🎨 Rendering", discord.ui.View(timeout=None))
        await watched.settle()

    await edit(b"jpeg")
    await edit()  # no new preview: the shown one stays
    rules[0] = SPOILERED  # the server spoilers its pictures now
    await edit()  # the open one goes at once
    await edit()
    await edit(b"jpeg")
    rules[0] = HIDDEN  # its maker turned private results on
    await edit(b"jpeg")
    await edit()
    rules[0] = OPEN  # the rules of now loosened: the next preview is shown again
    await edit(b"jpeg")
    rules.clear()  # unread: none shown
    await edit(b"jpeg")
    assert followup.attachments == [[False], None, [], None, [True], [], None, [False], []]


async def test_a_job_spoilered_at_submit_stays_spoilered() -> None:
    followup = _Followup()

    async def open_now() -> PreviewShown:
        return OPEN

    watched = _watched_through(followup, True, open_now)
    watched.preview = b"jpeg"
    watched.schedule("🎨 Rendering", discord.ui.View(timeout=None))
    await watched.settle()
    assert followup.attachments == [[True]]
