"""The one exception type for a member's mistake (pure: no discord, no torch)."""

from __future__ import annotations


class UserError(Exception):
    """Refused input: the message is one sentence naming the problem and how to fix it."""
