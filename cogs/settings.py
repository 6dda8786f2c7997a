"""/settings: a member's own defaults for /imagine (used when an option is left out)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.policy.member_settings import MemberSettings, UserSettings


def describe_settings(settings: UserSettings) -> str:
    def shown(value: object) -> str:
        return "Easel's default" if value is None else f"`{value}`"

    return "\n".join(
        [
            "**Your /imagine defaults**",
            f"steps: {shown(settings.steps)}",
            f"cfg: {shown(settings.cfg)}",
            f"sampler: {shown(settings.sampler)}",
            f"size: {shown(settings.size)}",
            f"negative: {shown(settings.negative)}",
            f"private results: {'yes' if settings.private_results else 'no'}",
        ]
    )


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
        private_results="Show your results only to you",
        reset="Forget every saved default first",
    )
    async def settings(
        self,
        interaction: discord.Interaction[Any],
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        sampler: app_commands.Range[str, 1, 64] | None = None,
        size: app_commands.Range[str, 1, 16] | None = None,
        negative: app_commands.Range[str, 0, 2000] | None = None,
        private_results: bool | None = None,
        reset: bool = False,
    ) -> None:
        changes: dict[str, object] = {
            "steps": steps,
            "cfg": cfg,
            "sampler": sampler,
            "size": size,
            "negative": negative,
            "private_results": private_results,
        }
        user_id = interaction.user.id
        if reset or any(value is not None for value in changes.values()):
            current = await self._settings.update(user_id, changes, clear=reset)
            heading = "Saved."
        else:
            current = await self._settings.get(user_id)
            heading = "Nothing changed; pass options to change them."
        await interaction.response.send_message(
            f"{heading}\n{describe_settings(current)}", ephemeral=True
        )
