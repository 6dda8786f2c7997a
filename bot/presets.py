"""Named /imagine presets: a member's own, and a server's saved by its admins.

A preset fills what a request leaves out, after the options and the prompt's flags and
before the member's saved defaults (``over_saved_settings``). ``--preset name`` (or the
``preset`` option) finds the member's preset of that name first, then the server's: a
member's preset shadows the server's one of the same name. A server's presets are used in
that server only.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bot.requests import (
    ImagineOptions,
    RequestError,
    check_prompt_length,
    check_sampler,
    check_saved_values,
)
from bot.shown_text import as_read, shortened
from bot.user_errors import Reason, UserError, as_sentence
from db import presets as store
from db.database import transaction
from db.presets import Scope, StoredPreset
from db.user_settings import UserSettings
from inference.types import RenderRequest

__all__ = [
    "MAX_PRESETS",
    "MAX_PRESET_NAME",
    "MAX_SHOWN_VALUE",
    "PRESET_AUDIT_PREFIX",
    "Preset",
    "Presets",
    "Saved",
    "SavedValues",
    "Scope",
    "as_code",
    "check_saved_sampler",
    "over_saved_settings",
    "refused_as_saved",
    "refused_by_the_default_note",
    "saved_values",
]

MAX_PRESETS = 25  # per member, and per server
MAX_PRESET_NAME = 32
# A server preset's rows in the settings audit: this, then its name (``audited_setting``).
PRESET_AUDIT_PREFIX = "preset "
# A saved value as a reply shows it (a preset's, a member's /settings): at most this many
# characters, so that a reply quoting several (a 2,000-character negative prompt among
# them) stays within Discord's 2,000. What is stored and used stays whole.
MAX_SHOWN_VALUE = 300


def audited_setting(name: str) -> str:
    """The setting a change to the server preset ``name`` is audited as."""
    return PRESET_AUDIT_PREFIX + name


@dataclass(frozen=True)
class Preset:
    """The settings a preset fixes; None: left to the request, the member or Easel."""

    name: str
    sampler: str | None = None
    steps: int | None = None
    cfg: float | None = None
    size: str | None = None
    style: str | None = None
    model: str | None = None
    negative: str | None = None
    clip_skip: int | None = None
    scope: Scope = Scope.MEMBER

    def settings(self) -> dict[str, Any]:
        """The settings it fixes, by name (what is stored)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("name", "scope") and getattr(self, field.name) is not None
        }

    def request(self) -> RenderRequest:
        """What of a request the preset fixes that a model's family may refuse (its model,
        sampler and clip skip: ``inference.family_rules``), the rest left as requests are."""
        fields: dict[str, Any] = {"model": self.model}
        if self.sampler is not None:
            fields["sampler"] = self.sampler
        if self.clip_skip is not None:
            fields["options"] = {"clip_skip": self.clip_skip}
        return RenderRequest("", **fields)

    def describe(self) -> str:
        shown = ", ".join(f"{name}: {as_code(value)}" for name, value in self.settings().items())
        return f"**{as_bold(self.name)}** — {shown or 'nothing fixed'}"


# What a preset's name (any characters but spaces) could start as markdown inside bold text:
# a style, code or spoiler mark, an escape, a masked link, a mention's or pill's "<".
_MARKDOWN_IN_A_NAME = re.compile(r"([\\*_~|`\[\]<>])")


def as_bold(name: str) -> str:
    """A preset's name, to be shown between ``**``: each character markdown would read
    escaped, so a name like "a`b" or "<@&1>" neither opens code for the rest of the reply nor
    shows as a mention."""
    return _MARKDOWN_IN_A_NAME.sub(r"\\\1", name)


def as_code(value: object) -> str:
    """``value`` as inline code, where nothing renders as markdown: without its backticks,
    any of which would end the code early and let the rest (a member's negative prompt)
    render as formatting, links and headings in Easel's message; on one line, without
    direction controls (``as_read``); cut to ``MAX_SHOWN_VALUE`` characters, an ellipsis
    marking a cut."""
    return f"`{shortened(as_read(str(value).replace('`', '')), MAX_SHOWN_VALUE)}`"


def validated(preset: Preset) -> Preset:
    """The preset with its name trimmed; ``RequestError`` names the first bad setting."""
    name = preset.name.strip()
    if not 1 <= len(name) <= MAX_PRESET_NAME or any(char.isspace() for char in name):
        raise RequestError(
            f"a preset name must be 1 to {MAX_PRESET_NAME} characters without spaces, "
            f"not {preset.name!r}"
        )
    if not preset.settings():
        raise RequestError("a preset must fix at least one setting (sampler, steps, cfg, ...)")
    check_saved_values(preset.steps, preset.cfg, preset.size, preset.clip_skip, preset.sampler)
    if preset.negative is not None:
        check_prompt_length(preset.negative, "the preset's negative prompt")
    return dataclasses.replace(preset, name=name)


def over_saved_settings(preset: Preset | None, settings: UserSettings) -> Preset:
    """What fills the gaps a member's options and prompt flags leave (``build_requests``'s
    ``preset``): the named preset's values, then the member's saved /settings. Applied after
    the flags are read, so a typed ``--steps`` or ``--ar`` beats both."""
    base = preset or Preset(name="/settings")
    return dataclasses.replace(
        base,
        steps=base.steps if base.steps is not None else settings.steps,
        cfg=base.cfg if base.cfg is not None else settings.cfg,
        sampler=base.sampler or settings.sampler,
        size=base.size or settings.size,
        negative=base.negative if base.negative is not None else settings.negative,
        clip_skip=base.clip_skip if base.clip_skip is not None else settings.clip_skip,
    )


def refused_as_saved(error: Exception, what: str, preset: Preset | None) -> UserError:
    """The refusal ``error`` of a ``what`` (sampler, model, style) the member did not type: it
    came from ``preset`` (None: their /settings), saved before such a value was checked on
    saving. It says where the value is kept and how to change it, so the member is not left
    guessing (reason: ``error``'s, else a bad input)."""
    option = what.replace(" ", "_")  # "clip skip": the commands' clip_skip
    if preset is None:
        where = "your /settings"
        fix = f"change it with `/settings {option}:`, or clear them with `/settings reset:True`"
    elif preset.scope is Scope.SERVER:
        where = f"this server's preset {as_code(preset.name)}"
        fix = "pick another preset, or ask an admin to mend that one"
    else:
        where = f"your preset {as_code(preset.name)}"
        fix = (
            f"save it again with `/presets save name:{preset.name.replace('`', '')} {option}:`, "
            "or delete it with `/presets delete`"
        )
    return UserError(
        f"{as_sentence(str(error))} That {what} comes from {where}: {fix}.",
        getattr(error, "reason", Reason.INPUT),
    )


def refused_by_the_default_note(refusal: UserError, guild_id: int | None) -> str:
    """The note of what the default model where ``guild_id`` (None: direct messages, whose
    default is Easel's) refuses of a saved value naming no model."""
    if guild_id is None:
        where, there = "in direct messages with Easel's default", "in direct messages"
    else:
        where, there = "here with this server's default", "here"
    return (
        f"Note: naming no model, it renders {where}, which refuses it: "
        f"{as_sentence(str(refusal))} Add a `--model` that takes it when you use it {there}."
    )


@dataclass(frozen=True)
class Saved:
    """A value a request takes from a preset or the member's /settings, not typed, and where
    it is kept (``kept_in``: the preset; None: /settings), for ``refused_as_saved``."""

    value: str | int
    kept_in: Preset | None


# The saved values a model's family may refuse (``saved_values``), by the feature its refusal
# names (``inference.family_rules.FlowRefusal.feature``): "sampler", "clip skip".
SavedValues = dict[str, Saved]


def saved_values(
    options: ImagineOptions, preset: Preset | None, settings: UserSettings
) -> SavedValues:
    """The sampler and clip skip the request takes from ``preset`` or the member's /settings,
    with where each is kept, for ``refused_as_saved``; one the options or the prompt name
    (the member typed it), or none saved, is not among them."""
    saved: SavedValues = {}
    if not (options.sampler or options.typed[1].sampler):
        if preset is not None and preset.sampler:
            saved["sampler"] = Saved(preset.sampler, preset)
        elif settings.sampler is not None:
            saved["sampler"] = Saved(settings.sampler, None)
    if options.clip_skip is None:
        if preset is not None and preset.clip_skip is not None:
            saved["clip skip"] = Saved(preset.clip_skip, preset)
        elif settings.clip_skip is not None:
            saved["clip skip"] = Saved(settings.clip_skip, None)
    return saved


def check_saved_sampler(saved: SavedValues) -> None:
    """Refuse a saved sampler (``saved_values``) that is no sampler, saying where it is
    saved: the member typed no sampler."""
    if (sampler := saved.get("sampler")) is None:
        return
    try:
        check_sampler(str(sampler.value))
    except RequestError as error:
        raise refused_as_saved(error, "sampler", sampler.kept_in) from None


def _from_stored(stored: StoredPreset, scope: Scope) -> Preset:
    known = {field.name for field in dataclasses.fields(Preset)} - {"name", "scope"}
    values = {name: value for name, value in stored.values.items() if name in known}
    return Preset(name=stored.name, scope=scope, **values)


class Presets:
    """Saving, listing and finding presets; a server's are written by its admins only (the
    cogs check who acts, this class what is stored)."""

    def __init__(self, conn: aiosqlite.Connection, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock

    async def save(self, user_id: int, preset: Preset) -> tuple[Preset, Preset | None]:
        """Save (or replace) one of the member's presets; at most ``MAX_PRESETS``. The preset
        saved, and the one of that name it replaced (None: none), for the member to see."""
        preset = validated(preset)
        async with transaction(self._conn):
            old = await self._put(
                Scope.MEMBER, user_id, StoredPreset(preset.name, preset.settings())
            )
        return preset, None if old is None else _from_stored(old, Scope.MEMBER)

    async def delete(self, user_id: int, name: str) -> Preset | None:
        """Delete one of the member's presets; the one deleted (None: none of that name)."""
        async with transaction(self._conn):
            old = await store.find(self._conn, Scope.MEMBER, user_id, name)
            if old is None:
                return None
            await store.delete(self._conn, Scope.MEMBER, user_id, name)
        return _from_stored(old, Scope.MEMBER)

    async def share(self, guild_id: int, admin_id: int, name: str) -> Preset:
        """Copy the admin's own preset ``name`` to the server's presets (audited)."""
        async with transaction(self._conn):
            own = await store.find(self._conn, Scope.MEMBER, admin_id, name)
            if own is None:
                raise RequestError(
                    f"you have no preset named {name!r}; save it with `/presets save` first"
                )
            old = await self._put(Scope.SERVER, guild_id, own)
            await store.audit_server_change(
                self._conn, guild_id, admin_id, audited_setting(own.name), old, own, self._clock()
            )
        return _from_stored(own, Scope.SERVER)

    async def unshare(self, guild_id: int, admin_id: int, name: str) -> bool:
        """Delete the server's preset ``name`` (audited); False when there is none."""
        async with transaction(self._conn):
            old = await store.find(self._conn, Scope.SERVER, guild_id, name)
            if old is None:
                return False
            await store.delete(self._conn, Scope.SERVER, guild_id, name)
            await store.audit_server_change(
                self._conn, guild_id, admin_id, audited_setting(old.name), old, None, self._clock()
            )
        return True

    async def _put(self, scope: Scope, owner_id: int, preset: StoredPreset) -> StoredPreset | None:
        """Write inside the caller's transaction; returns the preset it replaced, if any."""
        old = await store.find(self._conn, scope, owner_id, preset.name)
        if old is None and await store.count(self._conn, scope, owner_id) >= MAX_PRESETS:
            raise RequestError(
                f"at most {MAX_PRESETS} presets are kept; delete one before saving {preset.name!r}"
            )
        await store.put(self._conn, scope, owner_id, preset, self._clock())
        return old

    async def of(self, scope: Scope, owner_id: int) -> list[Preset]:
        """The owner's presets, by name."""
        return [
            _from_stored(stored, scope)
            for stored in await store.list_all(self._conn, scope, owner_id)
        ]

    async def names_for(self, user_id: int, guild_id: int | None) -> list[str]:
        """The names ``find`` can find for this member here: theirs, then the server's."""
        names = [preset.name for preset in await self.of(Scope.MEMBER, user_id)]
        if guild_id is not None:
            taken = {name.casefold() for name in names}
            names += [
                preset.name
                for preset in await self.of(Scope.SERVER, guild_id)
                if preset.name.casefold() not in taken
            ]
        return names

    async def find(self, user_id: int, guild_id: int | None, name: str) -> Preset:
        """The member's preset of that name, else the server's (in a server); ``RequestError``
        when neither exists."""
        stored = await store.find(self._conn, Scope.MEMBER, user_id, name)
        if stored is not None:
            return _from_stored(stored, Scope.MEMBER)
        if guild_id is not None:
            stored = await store.find(self._conn, Scope.SERVER, guild_id, name)
            if stored is not None:
                return _from_stored(stored, Scope.SERVER)
        where = "yours or this server's" if guild_id is not None else "yours"
        raise RequestError(f"no preset named {name!r} among {where}; `/presets list` shows them")
