"""A wire-level fake Discord (REST v10 + Gateway v10) on loopback for the bot's tests."""

from .payloads import Overwrite, StoredAttachment
from .records import InteractionHandle, RateLimitRecord, RestCall, StoredMessage
from .rules import Violation
from .server import FakeDiscord
from .state import AddedGuild, CommandNotShown

__all__ = [
    "AddedGuild",
    "CommandNotShown",
    "FakeDiscord",
    "InteractionHandle",
    "Overwrite",
    "RateLimitRecord",
    "RestCall",
    "StoredAttachment",
    "StoredMessage",
    "Violation",
]
