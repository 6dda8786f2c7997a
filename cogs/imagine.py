"""``/imagine``: validate, acknowledge, journal. The queue posts the result."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.requests import MAX_SEED, ImagineOptions, RequestError, build_request
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
        try:
            request = build_request(options)
        except RequestError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        await submit_from_interaction(interaction, "imagine", request)
