"""``/models``, ``/loras``, ``/embeddings`` and ``/wildcards``: what is installed, paged and
searchable, answered to the member alone; and the ``lora`` autocomplete of ``/imagine``.

Only models, LoRAs and embeddings this server allows are listed. Model families and LoRA and
embedding cards come from the files' headers (``inference.metadata``), never from their
weights, read on a thread; models' headers only when their files change
(``inference.model_list``). Page buttons carry the list, page and search in their custom_id, so
they need no memory and work after a restart.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.policy.addons import AddonKind, addon_unavailable
from cogs.choices import addons_allowed_here, allowed_models_only, choices_of, search_key
from cogs.common import page_turn_button, page_turns, services_of
from cogs.errors import report_error
from inference.metadata import network_info
from inference.model_list import installed_models
from inference.names import as_typed
from inference.prompts import WildcardLibrary
from inference.prompts.flags import insert_before_flags
from inference.registry import NetworkKind

PAGE_SIZE = 10
MAX_SEARCH_CHARS = 50  # leaves room for the rest of a page button's custom_id (100 at most)
LORA_WEIGHT = 0.8  # the web UI's default multiplier when a LoRA is picked
_MAX_LINE = 300


class ListKind(StrEnum):
    MODELS = "models"
    LORAS = "loras"
    EMBEDDINGS = "embeddings"
    WILDCARDS = "wildcards"


_TITLES = {
    ListKind.MODELS: "Models",
    ListKind.LORAS: "LoRAs",
    ListKind.EMBEDDINGS: "Embeddings",
    ListKind.WILDCARDS: "Wildcards",
}
_HOW_TO_USE = {
    ListKind.MODELS: "Use one with `/imagine model:` or `--model name`.",
    ListKind.LORAS: "Put the tag in your prompt, or pick one with `/imagine lora:`.",
    ListKind.EMBEDDINGS: "Write the name in your prompt or negative prompt.",
    ListKind.WILDCARDS: "Write `__name__` in your prompt for a random line of that file.",
}


@dataclass(frozen=True)
class Listed:
    name: str
    line: str  # as shown; searched too, so trigger words and families can be found


def lora_tag(name: str) -> str:
    return f"<lora:{name}:{LORA_WEIGHT}>"


async def allowed_model_names(interaction: discord.Interaction[Any]) -> list[str]:
    """Installed models this server allows (all of them where its admins chose none)."""
    # Off the loop: the models folders are walked for it.
    names = await asyncio.to_thread(services_of(interaction).model_names)
    return await allowed_models_only(interaction, names)


async def listed(interaction: discord.Interaction[Any], kind: ListKind) -> list[Listed]:
    """Everything of ``kind`` the member may use here, in name order (files read on a thread)."""
    services = services_of(interaction)
    registry = services.registry
    if kind is ListKind.MODELS:
        models = await asyncio.to_thread(installed_models, registry)
        allowed = await allowed_models_only(interaction, models)
        rows = [Listed(name, f"`{name}` — {models[name].label}") for name in allowed]
    elif kind is ListKind.WILDCARDS:
        folder = services.prompts.wildcards_dir
        names = [] if folder is None else await asyncio.to_thread(WildcardLibrary(folder).names)
        rows = [Listed(name, f"`__{name}__`") for name in names]
    else:
        network_kind: NetworkKind = "lora" if kind is ListKind.LORAS else "embedding"
        addon_kind = AddonKind.LORA if kind is ListKind.LORAS else AddonKind.EMBEDDING
        files = await asyncio.to_thread(registry.network_files, network_kind)
        allowed = await addons_allowed_here(interaction, addon_kind, files)
        # Headers only of those listed: on a thread, as the folders' walk.
        cards = await asyncio.to_thread(lambda: {n: network_info(files[n]) for n in allowed})
        rows = []
        for name, card in cards.items():
            shown = f"`{lora_tag(name)}`" if kind is ListKind.LORAS else f"`{name}`"
            words = (
                f"; trigger words: {', '.join(card.trigger_words)}" if card.trigger_words else ""
            )
            rows.append(Listed(name, f"{shown} — base model {card.base_model}{words}"))
    return sorted(rows, key=lambda row: row.name.casefold())


def searched(rows: list[Listed], search: str) -> list[Listed]:
    needle = search_key(search.strip())
    return [row for row in rows if needle in search_key(row.line)] if needle else rows


def page_of(
    kind: ListKind, rows: list[Listed], page: int, search: str
) -> tuple[discord.Embed, discord.ui.View | None]:
    """One page (clamped to the pages there are) with ◀ ▶ buttons when there are several."""
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(max(page, 0), pages - 1)
    shown = rows[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    lines = [_clipped(row.line) for row in shown]
    if not lines:
        lines = [f"Nothing matches “{search}”." if search else "None installed."]
    embed = discord.Embed(
        title=f"{_TITLES[kind]} ({len(rows)})",
        description="\n".join(lines) + f"\n\n{_HOW_TO_USE[kind]}",
    )
    embed.set_footer(text=f"Page {page + 1}/{pages}" + (f" · search: {search}" if search else ""))
    return embed, page_turns(
        page,
        pages,
        lambda to, label, disabled: PageButton(kind, to, search, label, disabled),
    )


class PageButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:list:(?P<kind>[a-z]+):(?P<page>-?\d+):(?P<search>.*)",
):
    """◀ / ▶ under a list: shows that page of the list, searched as before."""

    def __init__(
        self, kind: ListKind, page: int, search: str, label: str = "▶", disabled: bool = False
    ) -> None:
        custom_id = f"easel:list:{kind.value}:{page}:{search}"
        super().__init__(page_turn_button(custom_id, label, disabled))
        self.kind, self.page, self.search = kind, page, search

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        return cls(ListKind(match["kind"]), int(match["page"]), match["search"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            # Read again at each click: what is installed, and what this server allows, now.
            rows = searched(await listed(interaction, self.kind), self.search)
            embed, view = page_of(self.kind, rows, self.page, self.search)
            await interaction.response.edit_message(embed=embed, view=view)
        except Exception as error:
            await report_error(interaction, error, f"list page {self.kind.value}")


async def show_list(interaction: discord.Interaction[Any], kind: ListKind, search: str) -> None:
    rows = searched(await listed(interaction, kind), search)
    embed, view = page_of(kind, rows, 0, search)
    await interaction.response.send_message(
        embed=embed, view=view or discord.utils.MISSING, ephemeral=True
    )


async def lora_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """LoRAs whose name, base model or trigger words hold what was typed, with those shown."""
    rows = searched(await listed(interaction, ListKind.LORAS), current)
    return choices_of((_choice_name(row), row.name) for row in rows)


async def with_lora(interaction: discord.Interaction[Any], prompt: str, lora: str | None) -> str:
    """``prompt`` with the picked LoRA's tag after its words; a name not installed, or one the
    server leaves out, is refused alike (whether a file exists is not told)."""
    if lora is None:
        return prompt
    lora = as_typed(lora)  # as the registry names files
    # Off the loop: the LoRA folders are walked for it.
    installed = await asyncio.to_thread(services_of(interaction).registry.network_files, "lora")
    usable = await addons_allowed_here(interaction, AddonKind.LORA, installed)
    if lora not in usable:
        raise addon_unavailable(AddonKind.LORA, lora, usable)
    return insert_before_flags(prompt, lora_tag(lora))


def _choice_name(row: Listed) -> str:
    return row.line.replace("`", "").replace(lora_tag(row.name), row.name)


def _clipped(line: str) -> str:
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"


_SEARCH = app_commands.Range[str, 1, MAX_SEARCH_CHARS]


class ListsCog(commands.Cog):
    @app_commands.command(name="models", description="The models you can use here")
    @app_commands.describe(search="Only entries whose name or family contains this")
    async def models(self, interaction: discord.Interaction[Any], search: _SEARCH = "") -> None:
        await show_list(interaction, ListKind.MODELS, search)

    @app_commands.command(
        name="loras", description="Installed LoRAs with base model and trigger words"
    )
    @app_commands.describe(search="Only LoRAs whose name, base model or trigger words contain this")
    async def loras(self, interaction: discord.Interaction[Any], search: _SEARCH = "") -> None:
        await show_list(interaction, ListKind.LORAS, search)

    @app_commands.command(name="embeddings", description="Installed textual-inversion embeddings")
    @app_commands.describe(search="Only embeddings whose name or base model contains this")
    async def embeddings(self, interaction: discord.Interaction[Any], search: _SEARCH = "") -> None:
        await show_list(interaction, ListKind.EMBEDDINGS, search)

    @app_commands.command(name="wildcards", description="Wildcard files you can use as __name__")
    @app_commands.describe(search="Only wildcards whose name contains this")
    async def wildcards(self, interaction: discord.Interaction[Any], search: _SEARCH = "") -> None:
        await show_list(interaction, ListKind.WILDCARDS, search)
