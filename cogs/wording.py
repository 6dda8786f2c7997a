"""Words several replies share, so each says a thing the same way."""

from __future__ import annotations

# What stands for the prompt of a job made without one (an /upscale of an upload).
NO_PROMPT = "(no prompt)"


def counted(count: int, noun: str) -> str:
    """ "1 job", "2 jobs": a count and its noun, plural unless the count is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
