"""Presets: validation, who finds which preset, the caps, sharing with a server (audited),
/forget-me, and how a preset fills a request (real SQLite, no Discord)."""

from __future__ import annotations

import aiosqlite
import pytest

from bot.presets import MAX_PRESETS, Preset, Presets, Scope, over_saved_settings
from bot.requests import ImagineOptions, RequestError, build_request
from db import guild_settings, history
from db.user_settings import UserSettings

ALICE, BOB, ADMIN = 1, 2, 3
GUILD, OTHER_GUILD = 100, 200


@pytest.fixture
def presets(conn: aiosqlite.Connection) -> Presets:
    return Presets(conn, clock=lambda: 5.0)


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        (Preset("", steps=4), "1 to 32 characters without spaces"),
        (Preset("x" * 33, steps=4), "1 to 32 characters without spaces"),
        (Preset("two words", steps=4), "1 to 32 characters without spaces"),
        (Preset("empty"), "at least one setting"),
        (Preset("p", steps=151), "steps must be a whole number between 1 and 150, got 151"),
        (Preset("p", cfg=31.0), "CFG scale must be a number between 0 and 30, got 31.0"),
        (Preset("p", clip_skip=13), "clip skip must be a whole number between 1 and 12"),
        (Preset("p", sampler="Eular a"), "unknown sampler 'Eular a'; choose one of: Euler a"),
        (Preset("p", size="500x512"), "multiple of 8"),
    ],
)
async def test_bad_presets_are_refused_in_one_sentence(
    presets: Presets, preset: Preset, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        await presets.save(ALICE, preset)


async def test_members_find_their_own_then_the_servers_and_never_anothers(
    presets: Presets,
) -> None:
    await presets.save(ALICE, Preset("Anime", clip_skip=2, steps=12))
    await presets.save(ADMIN, Preset("anime", steps=30, sampler="DPM++ 2M"))
    await presets.share(GUILD, ADMIN, "anime")
    # Names are one preset whatever their case; a member's shadows the server's.
    assert (await presets.find(ALICE, GUILD, "ANIME")).steps == 12
    assert (await presets.find(BOB, GUILD, "anime")).sampler == "DPM++ 2M"
    with pytest.raises(RequestError, match="no preset named 'anime' among yours or this"):
        await presets.find(BOB, OTHER_GUILD, "anime")
    with pytest.raises(RequestError, match="among yours;"):
        await presets.find(BOB, None, "anime")  # a DM has no server presets
    assert await presets.names_for(ALICE, GUILD) == ["Anime"]
    assert await presets.names_for(BOB, GUILD) == ["anime"]


async def test_at_most_25_presets_but_replacing_one_is_fine(presets: Presets) -> None:
    for index in range(MAX_PRESETS):
        await presets.save(ALICE, Preset(f"p{index}", steps=5))
    await presets.save(ALICE, Preset("p3", steps=6))
    with pytest.raises(RequestError, match="at most 25 presets"):
        await presets.save(ALICE, Preset("one-more", steps=5))
    assert (await presets.find(ALICE, None, "p3")).steps == 6


async def test_sharing_copies_the_admins_own_preset_and_is_audited(
    presets: Presets, conn: aiosqlite.Connection
) -> None:
    with pytest.raises(RequestError, match="you have no preset named 'fast'"):
        await presets.share(GUILD, ADMIN, "fast")
    await presets.save(ADMIN, Preset("fast", steps=8))
    await presets.share(GUILD, ADMIN, "fast")
    assert await presets.unshare(GUILD, ADMIN, "FAST")
    assert not await presets.unshare(GUILD, ADMIN, "fast")
    audit = await guild_settings.audit_log(conn, GUILD, 10)
    assert [(entry.setting, entry.old_value, entry.new_value) for entry in audit] == [
        ("preset fast", '{"steps": 8}', None),
        ("preset fast", None, '{"steps": 8}'),
    ]
    assert (await presets.find(ADMIN, GUILD, "fast")).steps == 8  # the admin's own stays


async def test_forget_me_erases_the_members_presets_not_the_servers(
    presets: Presets, conn: aiosqlite.Connection
) -> None:
    await presets.save(ADMIN, Preset("mine", steps=8))
    await presets.share(GUILD, ADMIN, "mine")
    assert await history.count_rows_of_user(conn, ADMIN) == 1
    await history.erase_user(conn, ADMIN, asked_at=0.0, counted_since=0.0, anonymise_at=0.0)
    assert await history.count_rows_of_user(conn, ADMIN) == 0
    assert await presets.of(Scope.MEMBER, ADMIN) == []
    assert (await presets.find(BOB, GUILD, "mine")).steps == 8


def test_a_preset_fills_what_the_options_and_flags_leave_out() -> None:
    preset = Preset(
        "p", sampler="DDIM", steps=9, cfg=3.0, size="16:9", negative="blurry", clip_skip=2
    )
    filled = build_request(ImagineOptions("a cat"), preset=preset)
    assert (filled.sampler, filled.steps, filled.cfg_scale) == ("DDIM", 9, 3.0)
    assert filled.options == {"aspect": "16:9", "clip_skip": 2}
    assert filled.negative_prompt == "blurry"
    # Typed flags and options beat the preset.
    typed = build_request(ImagineOptions("a cat --steps 5 --ar 1:1", cfg=6.0), preset=preset)
    assert (typed.steps, typed.cfg_scale, typed.options["aspect"]) == (5, 6.0, "1:1")
    assert typed.notes == []


def test_a_preset_beats_the_members_saved_defaults_only_where_it_fixes_something() -> None:
    saved = UserSettings(steps=30, cfg=9.0, sampler="Euler", private_results=True)
    layered = over_saved_settings(Preset("p", steps=9), saved)
    assert (layered.steps, layered.cfg, layered.sampler) == (9, 9.0, "Euler")
    alone = over_saved_settings(None, saved)
    assert (alone.steps, alone.cfg, alone.sampler, alone.size) == (30, 9.0, "Euler", None)


def test_a_names_markdown_is_escaped_where_it_is_shown() -> None:
    """A name may hold any character but a space: one with a backtick would open code for the
    rest of the reply (every value after it shown as markdown), one like "<@&1>" would show as
    a role's mention."""
    preset = Preset(name="a`b*c<@&1>", steps=20, negative="soft")
    described = preset.describe()
    assert described == "**a\\`b\\*c\\<@&1\\>** — steps: `20`, negative: `soft`"
    assert described.replace("\\`", "").count("`") % 2 == 0


def test_a_backtick_in_a_value_does_not_end_its_code_early() -> None:
    """A negative prompt with a backtick would otherwise let its rest render as markdown in
    the "Server preset saved" confirmation (a masked link, a heading, bold)."""
    preset = Preset(name="house", steps=20, negative="blurry` [click](https://x.example) **`")
    assert preset.describe() == (
        "**house** — steps: `20`, negative: `blurry [click](https://x.example) **`"
    )
