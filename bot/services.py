"""What the cogs may use besides the queue; built once by ``bot.app.EaselBot.setup_hook``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.history import History
from bot.policy.guild import GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota_status import QuotaStatus
from bot.policy.styles import Style, load_styles
from bot.presets import Presets
from bot.requests import Defaults
from bot.settings import Settings
from inference.registry import ModelRegistry
from inference.validation import RenderLimits


@dataclass(frozen=True)
class Services:
    history: History
    member_settings: MemberSettings
    presets: Presets  # named /imagine presets, a member's and a server's
    guild_policy: GuildPolicy
    quota_status: QuotaStatus
    prompts: PromptPlanner  # the prompt language's CPU work, off the event loop
    # Uploaded pictures (/vary, /inpaint, /upscale), saved as PNG for the engine to read.
    inputs_dir: Path
    # Folder scans only (no torch): what the autocomplete lists and requests are checked against.
    registry: ModelRegistry
    styles_path: Path
    # Checked before a job is accepted; the engine checks again once sizes are known.
    limits: RenderLimits
    hires_upscaler: str  # what /imagine's hires fix enlarges with
    default_model: str | None = None  # EASEL_DEFAULT_MODEL (a server's own default comes first)

    @classmethod
    def build(cls, conn: aiosqlite.Connection, settings: Settings) -> Services:
        member_settings = MemberSettings(conn)
        prompts = PromptPlanner(settings.wildcards_dir)
        return cls(
            History(conn, settings.images_dir, settings.inputs_dir, member_settings),
            member_settings,
            Presets(conn),
            GuildPolicy(conn, allow_dms=settings.allow_dms, prompts=prompts),
            QuotaStatus(conn, settings.dm_limits),
            prompts,
            settings.inputs_dir,
            ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle),
            settings.data_dir / "styles.csv",
            settings.render_limits,
            settings.hires_upscaler,
            settings.default_model,
        )

    @property
    def request_defaults(self) -> Defaults:
        """What a request that names no steps gets: the usual default, or this server's
        ceiling when that is lower (so a plain /imagine is never refused for its steps)."""
        return Defaults(steps=min(Defaults.steps, self.limits.max_steps))

    def model_names(self) -> list[str]:
        """Installed checkpoints."""
        return self.registry.names()

    def upscaler_names(self) -> list[str]:
        """Lanczos and the installed model upscalers."""
        return self.registry.upscaler_names()

    def styles(self) -> dict[str, Style]:
        return load_styles(self.styles_path)
