"""/settings: a member's own defaults for /imagine (used when an option is left out), and
/presets: named settings used as ``--preset name``."""

from __future__ import annotations

from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.policy.member_settings import MemberSettings, UserSettings
from bot.policy.styles import style_named
from bot.presets import MAX_PRESET_NAME, Preset, Scope, as_code
from bot.requests import MAX_NEGATIVE_OPTION_CHARS
from bot.user_errors import UserError
from cogs.choices import matching_choices, model_choices, sampler_choices, style_choices
from cogs.common import (
    MESSAGE_LIMIT,
    check_model_usable,
    check_preset_takes,
    fair_shares,
    services_of,
    tell,
)
from inference.limits import MAX_CFG, MAX_CLIP_SKIP, MAX_STEPS, MIN_CFG, MIN_STEPS
from inference.names import as_typed


def describe_settings(settings: UserSettings) -> str:
    def shown(value: object) -> str:
        return "Easel's default" if value is None else as_code(value)

    return "\n".join(
        [
            "**Your /imagine defaults**",
            f"steps: {shown(settings.steps)}",
            f"cfg: {shown(settings.cfg)}",
            f"sampler: {shown(settings.sampler)}",
            f"size: {shown(settings.size)}",
            f"negative: {shown(settings.negative)}",
            f"clip skip: {shown(settings.clip_skip)}",
            f"private results: {'yes' if settings.private_results else 'no'}",
            f"results by DM too: {'yes' if settings.results_by_dm else 'no'}",
        ]
    )


# /settings clear's choices: one saved default, by its option's name.
SettingName = Literal[
    "steps",
    "cfg",
    "sampler",
    "size",
    "negative",
    "clip_skip",
    "private_results",
    "results_by_dm",
]


class SettingsCog(commands.Cog):
    def __init__(self, member_settings: MemberSettings) -> None:
        self._settings = member_settings

    @app_commands.command(name="settings", description="Your defaults for /imagine")
    @app_commands.describe(
        steps="Default sampling steps (1-150)",
        cfg="Default CFG scale (0-30)",
        sampler="Default sampler, by its web UI name",
        size="Default size: WxH such as 512x768, or an aspect ratio such as 16:9",
        negative="Default negative prompt",
        clip_skip="Default clip skip (1-12; 1 is the text encoder's last layer)",
        private_results="Show your results only to you",
        results_by_dm="Also send you a copy of each result by DM (not of age-restricted channels)",
        reset="Forget every saved default first",
        clear="Forget one saved default (back to Easel's), keeping the others",
    )
    @app_commands.autocomplete(sampler=sampler_choices)
    async def settings(
        self,
        interaction: discord.Interaction[Any],
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        sampler: app_commands.Range[str, 1, 64] | None = None,
        size: app_commands.Range[str, 1, 16] | None = None,
        negative: app_commands.Range[str, 0, MAX_NEGATIVE_OPTION_CHARS] | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
        private_results: bool | None = None,
        results_by_dm: bool | None = None,
        reset: bool = False,
        clear: SettingName | None = None,
    ) -> None:
        changes: dict[str, object] = {
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler,
            "size": size,
            "negative": negative,
            "clip_skip": clip_skip,
            "private_results": private_results,
            "results_by_dm": results_by_dm,
        }
        user_id = interaction.user.id
        if clear is not None and changes[clear] is not None:
            given = f"{clear}:{changes[clear]}"
            raise UserError(
                f"Both clear:{clear} and {given} change {clear}: pick one (clear:{clear} goes "
                f"back to Easel's default; {given} saves that value). Nothing was saved."
            )
        if reset or clear is not None or any(value is not None for value in changes.values()):
            unset = clear is not None and _unset(await self._settings.get(user_id), clear)
            forgotten = () if clear is None else (clear,)
            current = await self._settings.update(
                user_id, changes, clear=reset, back_to_default=forgotten
            )
            note = await _refused_by_the_default_here(interaction, sampler, clip_skip)
            heading = "Saved."
            if unset and not reset:
                saved = any(value is not None for value in changes.values())
                heading = f"{clear} was not set (Easel's default already applied)" + (
                    "; the rest saved." if saved else ": nothing changed."
                )
        else:
            current = await self._settings.get(user_id)
            heading = "Nothing changed; pass options to change them."
            note = None
        noted = "" if note is None else f"\n{note}"
        await tell(interaction, f"{heading}\n{describe_settings(current)}{noted}")


async def _refused_by_the_default_here(
    interaction: discord.Interaction[Any], sampler: str | None, clip_skip: int | None
) -> str | None:
    """The note for a sampler or clip skip just saved that the default model here (this
    server's; in direct messages, Easel's) refuses (Flux: no clip skip; Flux schnell: Euler,
    UniPC), in the render's sentence; None: none. It is saved all the same, not refused:
    /settings name no model and are the member's on every server, each rendering them with
    its own default (an SD one takes them) or with the model a request names; a render with
    this default still refuses it (``check_preset_takes``, as for a preset naming no model).
    Only the values given are read: one saved earlier is told where it is used."""
    if sampler is None and clip_skip is None:
        return None
    saved = Preset(name="/settings", sampler=sampler, clip_skip=clip_skip)
    return await check_preset_takes(services_of(interaction), saved, interaction.guild_id)


def _unset(settings: UserSettings, name: SettingName) -> bool:
    """Whether ``settings`` holds Easel's default for ``name`` (nothing of the member's)."""
    return bool(getattr(settings, name) == getattr(UserSettings(), name))


async def preset_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """The member's presets, then this server's (a member's shadows a server's of that name)."""
    names = await services_of(interaction).presets.names_for(
        interaction.user.id, interaction.guild_id
    )
    return matching_choices(names, current)


def describe_presets(title: str, presets: list[Preset], room: int | None = None) -> str:
    """A section of /presets list: its title, then as many of ``presets`` as fit ``room``
    characters (None: all), and a line saying how many more were left out."""
    lines = [preset.describe() for preset in presets]

    def section(kept: int) -> str:
        more = [f"… and {len(lines) - kept} more."] if kept < len(lines) else []
        return "\n".join([f"**{title}**", *lines[:kept], *more])

    if room is None:
        return section(len(lines))
    return section(max((k for k in range(len(lines) + 1) if len(section(k)) <= room), default=0))


class PresetsCog(commands.Cog):
    presets = app_commands.Group(
        name="presets", description="Named /imagine settings, used as --preset name"
    )

    @presets.command(name="save", description="Save (or replace) one of your presets")
    @app_commands.describe(
        name=f"1-{MAX_PRESET_NAME} characters, no spaces; use it as --preset name",
        sampler="Sampler, by its web UI name",
        steps="Sampling steps (1-150)",
        cfg="CFG scale (0-30)",
        size="WxH such as 512x768, or an aspect ratio such as 16:9",
        style="A saved style (styles.csv)",
        model="Checkpoint name",
        negative="Negative prompt",
        clip_skip="Clip skip (1-12)",
    )
    @app_commands.autocomplete(model=model_choices, sampler=sampler_choices, style=style_choices)
    async def save(
        self,
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, MAX_PRESET_NAME],
        sampler: app_commands.Range[str, 1, 64] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        size: app_commands.Range[str, 1, 16] | None = None,
        style: app_commands.Range[str, 1, 100] | None = None,
        model: app_commands.Range[str, 1, 100] | None = None,
        negative: app_commands.Range[str, 0, MAX_NEGATIVE_OPTION_CHARS] | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
    ) -> None:
        services = services_of(interaction)
        # What a render would refuse is refused now, before it is kept (and maybe shared).
        if model is not None:
            model = as_typed(model)
            await check_model_usable(services, model, interaction.guild_id)
        preset = Preset(name, sampler, steps, cfg, size, style, model, negative, clip_skip)
        # Without a model, this server's default's refusal is a note (a Flux one takes no clip
        # skip): the preset is the member's, for their other servers too.
        note = await check_preset_takes(services, preset, interaction.guild_id)
        if style is not None:
            style_named(services.styles(), style)
        saved, replaced = await services.presets.save(interaction.user.id, preset)
        was = "" if replaced is None else f"\nIt replaced your earlier one: {replaced.describe()}"
        verb = "Saved" if replaced is None else "Replaced"
        noted = "" if note is None else f"\n{note}"
        await tell(interaction, f"{verb} your preset {saved.describe()}{was}{noted}")

    @presets.command(name="delete", description="Delete one of your presets")
    @app_commands.describe(name="Which of your presets (see /presets list)")
    @app_commands.autocomplete(name=preset_choices)
    async def delete(
        self,
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, MAX_PRESET_NAME],
    ) -> None:
        deleted = await services_of(interaction).presets.delete(interaction.user.id, name)
        await tell(
            interaction,
            f"Deleted your preset {deleted.describe()}"
            if deleted is not None
            else f"You have no preset named {as_code(name)}.",
        )

    @presets.command(name="list", description="Your presets, and this server's")
    async def list_presets(self, interaction: discord.Interaction[Any]) -> None:
        presets = services_of(interaction).presets
        sections = [("Your presets", await presets.of(Scope.MEMBER, interaction.user.id))]
        if interaction.guild_id is not None:
            sections.append(
                ("This server's presets", await presets.of(Scope.SERVER, interaction.guild_id))
            )
        sections = [(title, listed) for title, listed in sections if listed]
        # Each section gets its fair share of one message: a long one never hides the other.
        whole = [len(describe_presets(title, listed)) for title, listed in sections]
        shares = fair_shares(whole, MESSAGE_LIMIT - len(sections) + 1)
        text = "\n".join(
            describe_presets(title, listed, share)
            for (title, listed), share in zip(sections, shares, strict=True)
        )
        await tell(interaction, text or "No presets yet: `/presets save` makes one.")
