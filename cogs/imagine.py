"""``/imagine``: personal defaults, validate, acknowledge, journal. The queue posts the result."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.member_settings import with_personal_defaults
from bot.requests import MAX_SEED, ImagineOptions, build_request
from cogs.common import services_of
from cogs.results import submit_from_interaction


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
    )
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, 4000],
        negative: app_commands.Range[str, 0, 2000] | None = None,
        seed: app_commands.Range[int, -1, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        sampler: str | None = None,
        size: str | None = None,
        model: str | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
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
        )
        personal = await services_of(interaction).member_settings.get(interaction.user.id)
        # A RequestError reaches the error handler: one ephemeral sentence, nothing queued.
        request = build_request(with_personal_defaults(options, personal))
        await submit_from_interaction(
            interaction, "imagine", request, private=personal.private_results
        )
