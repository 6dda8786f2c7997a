"""A wire-level fake Discord (REST v10 + Gateway v10) on loopback for the bot's tests."""

from .payloads import StoredAttachment
from .records import InteractionHandle, RateLimitRecord, RestCall, StoredMessage
from .rules import Violation
from .server import FakeDiscord

__all__ = [
    "FakeDiscord",
    "InteractionHandle",
    "RateLimitRecord",
    "RestCall",
    "StoredAttachment",
    "StoredMessage",
    "Violation",
]
