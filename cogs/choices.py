"""Autocomplete for option values that depend on what is installed (never over 25 choices)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import discord
from discord import app_commands

from bot.policy.addons import AddonKind
from cogs.common import models_allowed_in, services_of
from inference.names import as_typed
from inference.samplers import AUTOMATIC_SCHEDULE, SCHEDULE_TYPES, sampler_names

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord refuses more
# A choice's name and value: Discord refuses the whole list ("Loading options failed") for one
# longer, so a longer name is left out. /imagine takes it typed in full; the options capped at
# 100 characters (/presets save's style and model, /easel-admin model, addon, default-model)
# cannot, so such a file wants a shorter name.
MAX_CHOICE_CHARS = 100
_LEFT_OUT: set[str] = set()  # said once each in the log


def matching_choices(
    names: Iterable[str], typed: str, labels: Mapping[str, str] | None = None
) -> list[app_commands.Choice[str]]:
    """Names that start with what was typed first, then names that contain it, in any letter
    case and Unicode form (``as_typed``: ``é`` typed finds a name spelling it ``e`` + U+0301);
    each shown as its label when ``labels`` has one."""
    needle = search_key(typed.strip())
    folded = {name: search_key(name) for name in names}
    starts = [name for name, key in folded.items() if key.startswith(needle)]
    contains = [name for name, key in folded.items() if needle in key and name not in starts]
    shown = labels or {}
    return choices_of((shown.get(name, name), name) for name in starts + contains)


def search_key(text: str) -> str:
    """``text`` as a search compares it (autocomplete, the lists' search): ``as_typed``, then
    case-folded (which may decompose: ``as_typed`` again)."""
    return as_typed(as_typed(text).casefold())


def choices_of(labelled: Iterable[tuple[str, str]]) -> list[app_commands.Choice[str]]:
    """The first ``MAX_CHOICES`` (label, value) pairs as choices, each label cut to fit;
    a value too long for a choice is left out, and logged once."""
    choices: list[app_commands.Choice[str]] = []
    for label, value in labelled:
        if len(value) > MAX_CHOICE_CHARS:
            if value not in _LEFT_OUT:
                _LEFT_OUT.add(value)
                log.warning(
                    "%r is left out of autocomplete: Discord takes at most %d characters; "
                    "/imagine takes it typed in full, but /presets save and /easel-admin do "
                    "not: a shorter name lists it everywhere",
                    value[:MAX_CHOICE_CHARS] + "…",
                    MAX_CHOICE_CHARS,
                )
            continue
        choices.append(app_commands.Choice(name=label[:MAX_CHOICE_CHARS], value=value))
        if len(choices) == MAX_CHOICES:
            break
    return choices


async def allowed_models_only(
    interaction: discord.Interaction[Any], names: Iterable[str]
) -> list[str]:
    """``names`` less the models the interaction's server does not allow."""
    return await models_allowed_in(services_of(interaction), interaction.guild_id, names)


async def addons_allowed_here(
    interaction: discord.Interaction[Any], kind: AddonKind, names: Iterable[str]
) -> list[str]:
    """``names`` less the add-ons of ``kind`` the interaction's server does not allow: a
    list, an autocomplete or a refusal never shows what its admins left out."""
    rules = await services_of(interaction).guild_policy.addon_rules(interaction.guild_id)
    return rules.usable(kind, names)


async def model_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """Installed models this server allows (refiners left out), each shown with its family."""
    labels = await asyncio.to_thread(services_of(interaction).model_labels)
    return matching_choices(await allowed_models_only(interaction, labels), current, labels)


async def sampler_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    return matching_choices(sampler_names(), current)


async def schedule_type_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    return matching_choices([AUTOMATIC_SCHEDULE, *SCHEDULE_TYPES], current)


async def style_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    return matching_choices(sorted(services_of(interaction).styles()), current)


async def upscaler_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    # Reads add-on files' headers (whether each is whole): off the loop.
    upscalers = await asyncio.to_thread(services_of(interaction).upscaler_names)
    return matching_choices(
        await addons_allowed_here(interaction, AddonKind.UPSCALER, upscalers), current
    )
