"""Words several replies share, so each says a thing the same way."""

from __future__ import annotations

# Bot-side texts count their nouns too (the bot may not import cogs).
from bot.user_errors import counted as counted

# What stands for the prompt of a job made without one (an /upscale of an upload).
NO_PROMPT = "(no prompt)"
# A picture its member stopped while it shares the device with others' pictures (one call
# renders them all): /cancel's answer, the Cancel button's and its progress message's.
STOPPED_BESIDE_OTHERS = (
    "your picture was sharing the device with other pictures, so it stops being shown now; "
    "you pay only for the GPU time until now, and get no pictures."
)
