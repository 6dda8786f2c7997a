"""Point discord.py at another REST base and gateway (an API proxy, or the tests' fake Discord).

discord.py reads its REST base from ``discord.http.Route.BASE`` (webhooks and interaction
callbacks share it) and falls back to ``DiscordWebSocket.DEFAULT_GATEWAY`` when it has no
gateway URL from ``GET /gateway/bot``; setting both is the whole seam, the library stays unmodified.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl


def point_discord_at(api_base: str, gateway_url: str) -> None:
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
