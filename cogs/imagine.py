"""``/imagine``: personal defaults, style, hires fix, validate, acknowledge, journal. The queue
posts the result."""

from __future__ import annotations

import dataclasses
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.policy.member_settings import with_personal_defaults
from bot.policy.styles import apply_style
from bot.requests import (
    MAX_PROMPT_CHARS,
    MAX_SEED,
    ImagineOptions,
    RequestError,
    build_request,
)
from cogs.choices import model_choices, sampler_choices, style_choices
from cogs.common import services_of, submit_from_interaction
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request

# The "hires" option: render at the size asked, then re-detail at twice that (web UI's hires fix).
HIRES_SCALE = 2.0


def with_hires_fix(request: RenderRequest, upscaler: str) -> RenderRequest:
    options = {**request.options, "hires_scale": HIRES_SCALE, "hires_upscaler": upscaler}
    hires = dataclasses.replace(request, options=options)
    try:
        validate_request(hires)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return hires


class ImagineCog(commands.Cog):
    @app_commands.command(name="imagine", description="Create pictures from a text prompt")
    @app_commands.describe(
        prompt="What to draw; web UI syntax such as (word:1.3) works",
        negative="What to keep out of the picture",
        seed="Same seed + same settings = same picture; -1 or empty for random",
        steps="Sampling steps (1-150)",
        cfg="How strictly to follow the prompt (0-30)",
        sampler="Sampler by its web UI name, e.g. Euler a",
        size="WxH such as 512x768, or an aspect ratio such as 16:9",
        model="Checkpoint name",
        count="How many pictures (1-4)",
        style="A saved style (styles.csv) added to the prompt and negative prompt",
        hires="Hires fix: render, then re-detail at twice the size (slower)",
        fast="Fast mode: fewer full UNet passes (or a turbo model's recipe); close, not equal",
    )
    @app_commands.autocomplete(model=model_choices, sampler=sampler_choices, style=style_choices)
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: app_commands.Range[str, 0, 2000] | None = None,
        seed: app_commands.Range[int, -1, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        sampler: str | None = None,
        size: str | None = None,
        model: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        style: str | None = None,
        hires: bool = False,
        fast: bool | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt,
            negative=negative,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            size=size,
            model=model,
            count=count,
            fast=fast,
        )
        services = services_of(interaction)
        personal = await services.member_settings.get(interaction.user.id)
        # A RequestError reaches the error handler: one ephemeral sentence, nothing queued.
        request = build_request(
            with_personal_defaults(options, personal), services.request_defaults
        )
        if style:
            # After the inline flags were read, so the style's text cannot be taken for one.
            prompt_text, negative_text = apply_style(
                services.styles(), style, request.prompt, request.negative_prompt
            )
            request = dataclasses.replace(
                request, prompt=prompt_text, negative_prompt=negative_text
            )
        if hires:
            request = with_hires_fix(request, services.hires_upscaler)
        await submit_from_interaction(
            interaction, "imagine", request, private=personal.private_results
        )
