"""A value /settings or /presets keeps is checked as a render would check it, when it is saved;
one kept before such checks (or made bad since) is refused at use naming where it is kept and
how to change it, since the member typed none of it. Through the fake Discord."""

from __future__ import annotations

import pytest

from bot.presets import Preset
from bot.settings import Settings
from tests.e2e.helpers import QUICK, StartEasel, reply_to
from tests.fake_discord import FakeDiscord


async def test_a_bad_sampler_model_or_style_is_refused_when_saved(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    easel_settings_for_test.data_dir.mkdir(parents=True, exist_ok=True)
    (easel_settings_for_test.data_dir / "styles.csv").write_text(
        "name,prompt,negative_prompt\nOil painting,oil painting of {prompt},photo\n"
    )
    async with start_easel() as bot:
        typo = await reply_to(fake_discord, "settings", {"sampler": "Eular a"})
        assert typo.is_ephemeral
        assert typo.content.startswith("Unknown sampler 'Eular a'; choose one of: Euler a")
        kept = await bot.services.member_settings.get(fake_discord.user_id)
        assert kept.sampler is None
        fine = await reply_to(fake_discord, "settings", {"sampler": "Euler a"})
        assert fine.content.startswith("Saved.") and "sampler: `Euler a`" in fine.content

        for values, refusal in (
            ({"sampler": "Eular a"}, "Unknown sampler 'Eular a'"),
            ({"model": "nope"}, "The model `nope` is not installed or not allowed here"),
            ({"style": "nope"}, "Style 'nope' does not exist; known styles: Oil painting"),
        ):
            saved = await reply_to(
                fake_discord, "presets", {"name": "p", **values}, subcommand="save"
            )
            assert saved.is_ephemeral and saved.content.startswith(refusal), saved.content
        assert await bot.services.presets.names_for(fake_discord.user_id, None) == []
        good = await reply_to(
            fake_discord,
            "presets",
            {"name": "p", "model": "tiny", "style": "Oil painting", "sampler": "Euler"},
            subcommand="save",
        )
        assert good.content.startswith("Saved your preset **p**")


async def test_settings_offers_the_samplers(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        offered = await fake_discord.autocomplete("settings", {"sampler": "eul"}, "sampler")
        assert "Euler a" in [choice["value"] for choice in offered]


async def test_a_bad_value_saved_before_is_refused_naming_where_it_is_kept(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_easel() as bot:
        # Kept as before saving checked them: straight past the checks.
        monkeypatch.setattr("bot.policy.member_settings._check_values", lambda settings: None)
        monkeypatch.setattr("bot.presets.validated", lambda preset: preset)
        await bot.services.member_settings.update(fake_discord.user_id, {"sampler": "Eular a"})
        for preset in (
            Preset("s", sampler="Eular b"),
            Preset("m", model="nope"),
            Preset("y", style="nope"),
        ):
            await bot.services.presets.save(fake_discord.user_id, preset)

        plain = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert plain.is_ephemeral
        assert plain.content.startswith("Unknown sampler 'Eular a'; choose one of: Euler a")
        assert plain.content.endswith(
            "That sampler comes from your /settings: change it with `/settings sampler:`, "
            "or clear them with `/settings reset:True`."
        )
        await bot.services.member_settings.update(fake_discord.user_id, {}, clear=True)
        for prompt, refusal, kept in (
            ("a cat --preset s", "Unknown sampler 'Eular b'", "sampler comes from your preset `s`"),
            (
                "a cat --preset m",
                "The model `nope` is not installed",
                "model comes from your preset `m`",
            ),
            ("a cat --preset y", "Style 'nope' does not exist", "style comes from your preset `y`"),
        ):
            refused = await reply_to(fake_discord, "imagine", {"prompt": prompt, **QUICK})
            assert refused.is_ephemeral and refused.content.startswith(refusal), refused.content
            assert kept in refused.content and "/presets save name:" in refused.content
        # A server's preset, shared by an admin: the member cannot mend it, and is told so.
        owner, guild = fake_discord.owner_id, fake_discord.guild_id
        await bot.services.presets.save(owner, Preset("srv", sampler="Eular c"))
        await bot.services.presets.share(guild, owner, "srv")
        shared = await reply_to(fake_discord, "imagine", {"prompt": "a cat --preset srv", **QUICK})
        assert shared.content.endswith(
            "That sampler comes from this server's preset `srv`: pick another preset, or ask "
            "an admin to mend that one."
        ), shared.content
        assert bot.queue.queued_count() == 0

        # A sampler typed takes the place of the saved one: nothing is refused.
        typed = await reply_to(
            fake_discord, "imagine", {"prompt": "a cat --sampler Euler", **QUICK}
        )
        assert "comes from" not in typed.content


async def test_a_bad_sampler_saved_before_blocks_no_other_change(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/settings checks the values it changes: one kept before such checks is refused where
    it is used, naming where it is kept, not when the member changes something else."""
    async with start_easel() as bot:
        with monkeypatch.context() as before_checks:
            before_checks.setattr("bot.policy.member_settings._check_values", lambda _: None)
            await bot.services.member_settings.update(fake_discord.user_id, {"sampler": "Eular a"})

        changed = await reply_to(fake_discord, "settings", {"steps": 30})
        assert "steps: `30`" in changed.content, changed.content
        assert "sampler: `Eular a`" in changed.content, changed.content
        typo = await reply_to(fake_discord, "settings", {"sampler": "Eular b"})
        assert typo.is_ephemeral and typo.content.startswith("Unknown sampler 'Eular b'")
        used = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert used.is_ephemeral and used.content.startswith("Unknown sampler 'Eular a'")
        assert "That sampler comes from your /settings" in used.content, used.content
        assert bot.queue.queued_count() == 0
