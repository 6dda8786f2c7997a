"""What the cogs may use besides the queue; built once by ``bot.app.EaselBot.setup_hook``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.guild_policy import GuildPolicy
from bot.history import History
from bot.member_settings import MemberSettings


@dataclass(frozen=True)
class Services:
    history: History
    member_settings: MemberSettings
    guild_policy: GuildPolicy
    wildcards_dir: Path

    @classmethod
    def build(cls, conn: aiosqlite.Connection, images_dir: Path, wildcards_dir: Path) -> Services:
        return cls(
            History(conn, images_dir), MemberSettings(conn), GuildPolicy(conn), wildcards_dir
        )
