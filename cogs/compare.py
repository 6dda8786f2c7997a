"""``/compare``: an X/Y plot of one prompt (seed, sampler, steps, cfg, model or prompt
search/replace on each axis), queued as one job of several pictures and posted as one labelled
grid. Each picture is charged, and each must pass this server's rules and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.compare import Axis, AxisValues, cells_planned_apart, parse_axis, plan_comparison
from bot.presets import SavedValues
from bot.requests import (
    MAX_NEGATIVE_OPTION_CHARS,
    MAX_PROMPT_CHARS,
    SEED_OPTION_TOP,
    ImagineOptions,
)
from bot.services import Services
from bot.user_errors import UserError
from cogs.choices import model_choices, sampler_choices
from cogs.common import (
    allowed_models_where,
    check_family_takes,
    check_render_limits,
    only_allowed,
    requester_of,
    requests_for_member,
    services_of,
    submit_from_interaction,
)
from cogs.visibility import check_member_may_act_here
from inference.limits import MAX_CFG, MAX_STEPS, MIN_CFG, MIN_STEPS
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request

_AXES = [app_commands.Choice(name=f"{axis.value}", value=axis.value) for axis in Axis]
_AXES[-1] = app_commands.Choice(name="prompt S/R (search/replace)", value=Axis.PROMPT.value)
_VALUES = app_commands.Range[str, 1, 1000]


class CompareCog(commands.Cog):
    @app_commands.command(
        name="compare", description="An X/Y plot: one prompt with settings varied on two axes"
    )
    @app_commands.describe(
        prompt="What to draw; web UI syntax works",
        x="What changes from column to column",
        x_values=(
            "Comma-separated: 1,2,3 or 3-9 (+3); prompt S/R: the word to replace, "
            "then its stand-ins"
        ),
        y="What changes from row to row",
        y_values="Comma-separated values for the rows",
        negative="What to keep out of the pictures",
        seed="The seed every picture uses unless an axis changes it; -1 or empty for random",
        steps="Sampling steps (1-150) unless an axis changes them",
        cfg="How strictly to follow the prompt (0-30) unless an axis changes it",
        sampler="Sampler unless an axis changes it",
        size="WxH such as 512x768, or an aspect ratio such as 16:9",
        model="Checkpoint unless an axis changes it",
    )
    @app_commands.choices(x=_AXES, y=_AXES)
    @app_commands.autocomplete(model=model_choices, sampler=sampler_choices)
    async def compare(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        x: str,
        x_values: _VALUES,
        y: str | None = None,
        y_values: _VALUES | None = None,
        negative: app_commands.Range[str, 0, MAX_NEGATIVE_OPTION_CHARS] | None = None,
        seed: app_commands.Range[int, -1, SEED_OPTION_TOP] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        sampler: str | None = None,
        size: str | None = None,
        model: str | None = None,
    ) -> None:
        if (y is None) != (y_values is None):
            raise UserError("Give both y and y_values for a second axis, or neither.")
        services = services_of(interaction)
        options = ImagineOptions(
            prompt=prompt,
            negative=negative,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            size=size,
            model=model,
        )
        # A preset (--preset name) fills what the options leave out, as for /imagine.
        asked = await requests_for_member(interaction, options)
        base = asked.requests[0]
        if len(asked.requests) > 1:
            raise UserError("/compare renders one grid; leave out --repeat.")
        if base.count != 1:
            raise UserError("/compare renders one picture per cell; leave out --count.")
        # Where the member may post its grid, before its cells are planned (seconds for many).
        check_member_may_act_here(interaction, private=asked.private)
        # Read once for the axes and the cells' checks (each read may hop to a thread).
        allowed = await allowed_models_where(services, interaction.guild_id)
        models = only_allowed(await asyncio.to_thread(services.model_names), allowed)

        def axis(name: str, values: str) -> AxisValues:
            max_steps = services.limits.max_steps
            return parse_axis(Axis(name), values, base.prompt, max_steps, models)

        comparison = plan_comparison(
            base,
            axis(x, x_values),
            None if y is None or y_values is None else axis(y, y_values),
        )
        # A saved sampler on an axis renders in no cell: nothing to refuse of it.
        sampler_axis = Axis.SAMPLER.value in (x, y)
        saved = {
            feature: kept
            for feature, kept in asked.saved.items()
            if not (sampler_axis and feature == "sampler")
        }
        await _check_every_cell(interaction, comparison.cells, saved, asked.default_model, allowed)
        await submit_from_interaction(
            interaction, "compare", comparison.request, private=asked.private, saved=saved
        )


async def _check_every_cell(
    interaction: discord.Interaction[Any],
    cells: list[RenderRequest],
    saved: SavedValues,
    default_model: str | None,
    allowed: Collection[str],
) -> None:
    """Every picture passes what a lone /imagine of it would: ranges, this server's limits,
    its models and banned words (each search/replace prompt planned as the engine will), and
    its model family's rules (``saved``: the cells' sampler and clip skip the member saved),
    with ``default_model`` and the ``allowed`` models read before."""
    services = services_of(interaction)
    requester = requester_of(interaction)
    for cell in cells:
        try:
            validate_request(cell)
        except RenderInputError as error:
            raise UserError(f"Not rendered: {error}.") from None
        check_render_limits(services, cell)
    # Side by side, each within the planning budget: the refusal comes before Discord's 3 s.
    await asyncio.gather(
        *(
            services.guild_policy.admit(
                requester.guild_id,
                requester.channel_id,
                requester.age_restricted,
                cell,
                requester.role_ids,
                requester.user_id,  # read one after the other, on one planning thread
                parent_id=requester.thread_parent_id,
            )
            for cell in cells_planned_apart(cells)
        )
    )
    # Each model and sampler an axis brings (a sampler Flux lacks, a Flux cell of a model axis
    # given an SD sampler), refused before queueing as admission refuses the job's own.
    await asyncio.to_thread(_check_families, services, cells, default_model, allowed, saved)


def _check_families(
    services: Services,
    cells: list[RenderRequest],
    default_model: str | None,
    allowed: Collection[str],
    saved: SavedValues,
) -> None:
    """``check_family_takes`` of each model and sampler among ``cells`` (reads headers)."""
    for cell in {(cell.model, cell.sampler): cell for cell in cells}.values():
        check_family_takes(services, cell, default_model, allowed, saved)
