"""``/imagine``: personal defaults, style, hires fix, validate, acknowledge, journal. The queue
posts the result."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.policy.styles import apply_style, style_named
from bot.policy.unavailable import unavailable_here
from bot.presets import MAX_PRESET_NAME, refused_as_saved
from bot.requests import (
    MAX_NEGATIVE_OPTION_CHARS,
    MAX_PROMPT_CHARS,
    SEED_OPTION_TOP,
    ImagineOptions,
    RequestError,
)
from bot.services import Services
from cogs.blend import with_style_reference
from cogs.choices import (
    matching_choices,
    model_choices,
    sampler_choices,
    schedule_type_choices,
    style_choices,
)
from cogs.common import (
    allowed_models_where,
    only_allowed,
    requests_for_member,
    services_of,
    submit_from_interaction,
)
from cogs.control import ControlType, with_control_picture
from cogs.edit import SavedInputs
from cogs.lists import lora_choices, with_lora
from cogs.settings import preset_choices
from inference.control_units import MAX_CONTROL_WEIGHT
from inference.image_prompts import MAX_IMAGE_PROMPT_WEIGHT
from inference.limits import (
    MAX_CFG,
    MAX_CLIP_SKIP,
    MAX_COUNT,
    MAX_STEPS,
    MIN_CFG,
    MIN_COUNT,
    MIN_STEPS,
)
from inference.names import as_typed
from inference.refiner import MAX_SWITCH, MIN_SWITCH, refiner_names
from inference.types import UPSCALERS_FILLED_OPTION, RenderInputError, RenderRequest
from inference.validation import validate_request

# The "hires" option: render at the size asked, then re-detail at twice that (web UI's hires fix).
HIRES_SCALE = 2.0


def with_options(request: RenderRequest, **extra: object) -> RenderRequest:
    """``request`` with the engine options ``extra`` (None: left out), validated again."""
    options = {**request.options, **{k: v for k, v in extra.items() if v is not None}}
    changed = dataclasses.replace(request, options=options)
    try:
        validate_request(changed)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return changed


def with_hires_fix(request: RenderRequest, upscaler: str) -> RenderRequest:
    """``request`` with the hires fix, enlarging with ``upscaler``: the bot's choice, recorded
    so (``UPSCALERS_FILLED_OPTION``) for admission to refill and the start gate to let run."""
    filled = {UPSCALERS_FILLED_OPTION: ["hires_upscaler"]}
    return with_options(request, hires_scale=HIRES_SCALE, hires_upscaler=upscaler, **filled)


async def refiner_choices(
    interaction: discord.Interaction[Any], current: str
) -> list[app_commands.Choice[str]]:
    """Installed SDXL refiners this server allows (a refiner is a model too)."""
    return matching_choices(await refiners_here(interaction), current)


async def refiners_here(interaction: discord.Interaction[Any]) -> list[str]:
    """The installed SDXL refiners the interaction's server allows."""
    services = services_of(interaction)
    allowed = await allowed_models_where(services, interaction.guild_id)
    return await asyncio.to_thread(refiners_allowed, services, allowed)


def refiners_allowed(services: Services, allowed_models: Collection[str]) -> list[str]:
    """The installed SDXL refiners ``allowed_models`` (``allowed_models_where``) lets
    through. Walks the models folder and reads headers (cached per file version): run it on
    a thread."""
    return only_allowed(refiner_names(services.registry), allowed_models)


async def check_refiner_here(interaction: discord.Interaction[Any], request: RenderRequest) -> None:
    """The refiner ``request`` names, refused before anything is queued when it is not
    installed or not allowed here (naming those the member may pick, as an unknown upscaler
    or LoRA is); a model it cannot finish (no SDXL base) is admission's refusal
    (``check_family_takes``). The allowed list is read again (cached), as admission will: an
    admin may have changed it since."""
    services = services_of(interaction)
    refiner = str(request.options["refiner"])
    allowed = await allowed_models_where(services, interaction.guild_id)
    # Off the loop: a walk, and headers read (cached).
    usable = await asyncio.to_thread(refiners_allowed, services, allowed)
    if as_typed(refiner) not in usable:
        raise unavailable_here("refiner", refiner, usable, "/models")


class ImagineCog(commands.Cog):
    @app_commands.command(name="imagine", description="Create pictures from a text prompt")
    @app_commands.describe(
        prompt="What to draw; web UI syntax such as (word:1.3) works",
        negative="What to keep out of the picture",
        seed="Same seed + same settings = same picture; -1 or empty for random",
        steps="Sampling steps (1-150)",
        cfg="How strictly to follow the prompt (0-30)",
        sampler="Sampler by its web UI name, e.g. Euler a",
        schedule_type="Web UI schedule type (Karras, Exponential...); default: as the sampler says",
        size="WxH such as 512x768, or an aspect ratio such as 16:9",
        model="Checkpoint name",
        count="How many pictures (1-4)",
        style="A saved style (styles.csv) added to the prompt and negative prompt",
        hires="Hires fix: render, then re-detail at twice the size (slower)",
        fast="Fast mode: fewer full UNet passes (or a turbo model's recipe); close, not equal",
        lora="A LoRA (pick from the list): its <lora:name:0.8> tag goes at the end of the prompt",
        clip_skip="Clip skip (1-12): use the text encoder that many layers from its end",
        preset="A saved preset (/presets): its settings fill what you leave out",
        control="A picture to follow with a ControlNet (its edges, layout, depth...)",
        control_type="What the ControlNet reads from it; none: the picture already is the map",
        control_weight="How strongly the ControlNet steers (0-2, default 1)",
        control_start="When in the render it starts steering (0-1, default 0)",
        control_end="When it stops (0-1, default 1)",
        refiner="An SDXL refiner that finishes the picture (web UI's Refiner; SDXL models only)",
        refiner_switch="Share of the steps the model runs before the refiner (0.01-0.99, 0.8)",
        sref="A style reference picture (IP-Adapter); --sref <link> in the prompt works too",
        sref_strength="How strongly the style reference guides (0-2; default 1 style-only, 0.6)",
    )
    @app_commands.autocomplete(
        model=model_choices,
        sampler=sampler_choices,
        schedule_type=schedule_type_choices,
        style=style_choices,
        lora=lora_choices,
        preset=preset_choices,
        refiner=refiner_choices,
    )
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: app_commands.Range[str, 0, MAX_NEGATIVE_OPTION_CHARS] | None = None,
        seed: app_commands.Range[int, -1, SEED_OPTION_TOP] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, MIN_CFG, MAX_CFG] | None = None,
        sampler: str | None = None,
        size: str | None = None,
        model: str | None = None,
        count: app_commands.Range[int, MIN_COUNT, MAX_COUNT] | None = None,
        style: str | None = None,
        hires: bool = False,
        fast: bool | None = None,
        lora: str | None = None,
        clip_skip: app_commands.Range[int, 1, MAX_CLIP_SKIP] | None = None,
        preset: app_commands.Range[str, 1, MAX_PRESET_NAME] | None = None,
        control: discord.Attachment | None = None,
        control_type: ControlType | None = None,
        control_weight: app_commands.Range[float, 0.0, MAX_CONTROL_WEIGHT] = 1.0,
        control_start: app_commands.Range[float, 0.0, 1.0] = 0.0,
        control_end: app_commands.Range[float, 0.0, 1.0] = 1.0,
        schedule_type: str | None = None,
        refiner: str | None = None,
        refiner_switch: app_commands.Range[float, MIN_SWITCH, MAX_SWITCH] | None = None,
        sref: discord.Attachment | None = None,
        sref_strength: app_commands.Range[float, 0.0, MAX_IMAGE_PROMPT_WEIGHT] | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=await with_lora(interaction, prompt, lora),
            negative=negative,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            size=size,
            model=model,
            count=count,
            fast=fast,
            clip_skip=clip_skip,
            preset=preset,
            schedule_type=schedule_type,
        )
        services = services_of(interaction)
        # A RequestError reaches the error handler: one ephemeral sentence, nothing queued.
        asked = await requests_for_member(interaction, options)
        chosen = asked.preset
        request, *repeats = asked.requests
        if not style and chosen is not None and chosen.style:
            style = chosen.style
            try:
                style_named(services.styles(), style)
            except RequestError as error:
                raise refused_as_saved(error, "style", chosen) from None
        if style:
            # After the inline flags were read, so the style's text cannot be taken for one.
            prompt_text, negative_text = apply_style(
                services.styles(), style, request.prompt, request.negative_prompt
            )
            request = dataclasses.replace(
                request, prompt=prompt_text, negative_prompt=negative_text
            )
        if hires:
            rules = await services.guild_policy.addon_rules(interaction.guild_id)
            request = with_hires_fix(request, rules.upscaler_here(services.hires_upscaler))
        if refiner or refiner_switch is not None:
            request = with_options(request, refiner=refiner, refiner_switch=refiner_switch)
        if refiner:
            await check_refiner_here(interaction, request)
        async with SavedInputs(interaction) as inputs:
            if control is not None:
                request = await with_control_picture(
                    request,
                    inputs,
                    services,
                    control,
                    control_type,
                    control_weight,
                    control_start,
                    control_end,
                )
            request = await with_style_reference(
                interaction, request, options, inputs, sref, sref_strength
            )
            await submit_from_interaction(
                interaction,
                "imagine",
                request,
                private=asked.private,
                saved=asked.saved,
                repeat_seeds=[repeat.seed for repeat in repeats],
                # Its pictures read once acknowledged; an Easel picture among them is the
                # job's parent: withdrawn with it.
                before_queueing=inputs.saved_later,
                on_journaled=inputs.keep,
            )
