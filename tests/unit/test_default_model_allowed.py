"""A request that names no model renders with one the server allows: its default, else the
operator's, else its first allowed — never the operator's default or the first model installed
when the server left those out."""

from __future__ import annotations

import aiosqlite
import pytest

from bot.policy.guild import GuildList, GuildPolicy
from bot.policy.moderation import default_model_here
from bot.policy.prompt_safety import PromptPlanner
from cogs.admin import describe_guild
from inference.types import RenderRequest

GUILD, ADMIN, MEMBER = 100, 1, 2


@pytest.mark.parametrize(
    ("server_default", "operator_default", "allowed", "expected"),
    [
        (None, None, set(), None),  # the engine takes the first model installed
        (None, "big", set(), "big"),
        ("own", "big", set(), "own"),
        (None, "big", {"sfw-b", "sfw-a"}, "sfw-a"),  # the operator's is not allowed here
        (None, "sfw-b", {"sfw-b", "sfw-a"}, "sfw-b"),
        ("gone", "big", {"sfw-b", "sfw-a"}, "sfw-a"),  # a default the list left out since
    ],
)
def test_the_default_is_one_the_server_allows(
    server_default: str | None, operator_default: str | None, allowed: set[str], expected: str
) -> None:
    assert default_model_here(server_default, operator_default, allowed) == expected


async def test_a_request_naming_no_model_is_admitted_with_an_allowed_one(
    conn: aiosqlite.Connection,
) -> None:
    policy = GuildPolicy(
        conn, prompts=PromptPlanner(wildcards_dir=None), operator_default_model="unrestricted"
    )
    request = RenderRequest("a cat", seed=1, steps=2)
    admitted = await policy.admit(GUILD, None, False, request, member_id=MEMBER)
    assert admitted.request.model == "unrestricted"  # no list: the operator's default
    await policy.change_list(GUILD, ADMIN, GuildList.ALLOWED_MODEL, "sfw-only", add=True)
    admitted = await policy.admit(GUILD, None, False, request, member_id=MEMBER)
    assert admitted.request.model == "sfw-only"
    assert await policy.default_model_where(GUILD) == "sfw-only"  # the defaults read the same
    assert await policy.default_model_where(None) == "unrestricted"  # DMs have no list
    # /easel-admin show says which model that is, the server having set none.
    settings = await policy.settings(GUILD)
    shown = describe_guild(settings, None, 0, policy.default_model(settings))
    assert "default model: Easel default (a request naming no model gets sfw-only)" in shown


@pytest.mark.parametrize(
    ("stored", "allowed", "installed", "said"),
    [
        (
            "gone",
            [],
            ["tiny"],
            "gone (not installed: a request naming no model gets the first model installed)",
        ),
        # The first listed model stands (its refusal names what may be used): refused.
        (
            "gone",
            ["alsogone"],
            ["tiny"],
            "gone (not installed: a request naming no model is refused: alsogone is not installed)",
        ),
        (
            "gone",
            [],
            [],
            "gone (not installed: a request naming no model fails: no model is installed)",
        ),
        (None, [], [], "Easel default (a request naming no model fails: no model is installed)"),
        (None, [], ["tiny"], "Easel default\n"),
        ("tiny", [], ["tiny"], "tiny\n"),
    ],
    ids=[
        "gone",
        "gone-listed-not-installed",
        "gone-none-installed",
        "none-installed",
        "unset",
        "set",
    ],
)
async def test_show_says_what_a_request_naming_no_model_meets(
    conn: aiosqlite.Connection,
    stored: str | None,
    allowed: list[str],
    installed: list[str],
    said: str,
) -> None:
    """/easel-admin show's default line, read as /imagine reads the models installed and
    picks the model of a request naming none."""
    policy = GuildPolicy(
        conn, prompts=PromptPlanner(wildcards_dir=None), installed_models=lambda: installed
    )
    for name in allowed:
        await policy.change_list(GUILD, ADMIN, GuildList.ALLOWED_MODEL, name, add=True)
    if stored is not None:
        await policy.set_default_model(GUILD, ADMIN, stored)
    settings = await policy.settings(GUILD)
    held = await policy.installed_now()
    shown = describe_guild(settings, None, 0, policy.default_model(settings, held), installed=held)
    assert f"default model: {said}" in shown
