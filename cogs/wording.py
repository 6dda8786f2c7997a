"""Words several replies share, so each says a thing the same way."""

from __future__ import annotations

# Bot-side texts count their nouns too (the bot may not import cogs).
from bot.user_errors import counted as counted

# What stands for the prompt of a job made without one (an /upscale of an upload).
NO_PROMPT = "(no prompt)"
