"""The bot's web server: the Vary (Region) mask editor behind signed, expiring, single-use
links (aiohttp; no discord, no torch)."""
