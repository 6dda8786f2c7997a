"""What the fake remembers and what a test waits on: messages, interactions, REST calls."""

# The test API takes timeout= by design: on expiry it explains what the fake saw,
# which a bare asyncio.timeout() around the call could not.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .payloads import FLAG_EPHEMERAL, FLAG_LOADING, Json, StoredAttachment
from .rules import walk_components

T = TypeVar("T")

# Bounds a hang, never a speed: a 2-core machine under a full parallel run has taken over 5 s
# to answer a heavy /explain (CI, load 13).
DEFAULT_WAIT_S = 20.0


class ChangeFeed:
    """Wakes every waiter whenever the fake's state changes; waiters re-check their condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(
        self, check: Callable[[], T | None], timeout: float, explain: Callable[[], str]
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"after {timeout:.1f} s: {explain()}")
            # Taken right after the check, with no await between: no change can slip through.
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)


@dataclass
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    data: bytes


@dataclass
class RestCall:
    method: str
    path: str
    route: str
    status: int
    at: float
    query: dict[str, str] = field(default_factory=dict)
    json: Any = None
    files: list[tuple[str, int]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


@dataclass
class RateLimitRecord:
    """One 429 the fake answered, and how long the client waited before trying again."""

    method: str
    route: str
    retry_after: float
    answered_at: float
    retried_after: float | None = None

    @property
    def waited(self) -> bool:
        return self.retried_after is not None and self.retried_after >= self.retry_after


class StoredMessage:
    """A live view of one message as Discord holds it; edits show up in the same object."""

    def __init__(self, payload: Json, attachment_store: Mapping[int, StoredAttachment]) -> None:
        self.payload = payload
        self._attachment_store = attachment_store
        self.edit_count = 0
        self.deleted = False

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])

    @property
    def author_id(self) -> int:
        return int(self.payload["author"]["id"])

    @property
    def guild_id(self) -> int | None:
        guild_id = self.payload.get("guild_id")
        return None if guild_id is None else int(guild_id)

    @property
    def jump_url(self) -> str:
        """The message link a user copies in Discord's client."""
        where = "@me" if self.guild_id is None else self.guild_id
        return f"https://discord.com/channels/{where}/{self.channel_id}/{self.id}"

    @property
    def content(self) -> str:
        return str(self.payload["content"])

    @property
    def embeds(self) -> list[Json]:
        return list(self.payload["embeds"])

    @property
    def components(self) -> list[Json]:
        return list(self.payload["components"])

    @property
    def flags(self) -> int:
        return int(self.payload["flags"])

    @property
    def is_ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def is_loading(self) -> bool:
        """True while a deferred response still shows "thinking"."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def attachments(self) -> list[StoredAttachment]:
        return [self._attachment_store[int(a["id"])] for a in self.payload["attachments"]]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

    def component(self, *, custom_id: str | None = None, label: str | None = None) -> Json:
        """The component with this custom_id or label; LookupError lists what there is."""
        for candidate in walk_components(self.components):
            if custom_id is not None and candidate.get("custom_id") == custom_id:
                return candidate
            if label is not None and candidate.get("label") == label:
                return candidate
        available = [(c.get("label"), c.get("custom_id")) for c in walk_components(self.components)]
        raise LookupError(
            f"message {self.id} has no component with custom_id={custom_id!r} label={label!r}; "
            f"(label, custom_id) present: {[a for a in available if a != (None, None)]}"
        )

    def summary(self) -> str:
        names = [a.filename for a in self.attachments]
        return (
            f"<message {self.id} content={self.content[:80]!r} embeds={len(self.embeds)} "
            f"attachments={names} custom_ids={self.custom_ids} flags={self.flags}>"
        )

    __repr__ = summary


class InteractionHandle:
    """One interaction the fake sent to the bot, and everything the bot answered to it."""

    def __init__(
        self,
        *,
        interaction_id: int,
        token: str,
        interaction_type: int,
        label: str,
        channel_id: int,
        payload: Json,
        created_at: float,
        source_message_id: int | None,
        feed: ChangeFeed,
        messages: Mapping[int, StoredMessage],
        violations: list[str],
    ) -> None:
        self.id = interaction_id
        self.token = token
        self.type = interaction_type
        self.label = label
        self.channel_id = channel_id
        self.payload = payload
        self.created_at = created_at
        self.source_message_id = source_message_id
        self.acknowledged_at: float | None = None
        self.response_type: int | None = None
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self.autocomplete_choices: list[Json] | None = None
        self.modal: Json | None = None
        self.error_codes: list[int] = []
        self.ack_failed = False
        self._feed = feed
        self._messages = messages
        self._violations = violations

    @property
    def attachment_size_limit(self) -> int:
        return int(self.payload["attachment_size_limit"])

    @property
    def ack_latency(self) -> float | None:
        """Seconds from dispatch to the bot's first successful response (fake clock)."""
        return None if self.acknowledged_at is None else self.acknowledged_at - self.created_at

    @property
    def original(self) -> StoredMessage | None:
        if self.original_message_id is None:
            return None
        return self._messages.get(self.original_message_id)

    @property
    def followups(self) -> list[StoredMessage]:
        return [self._messages[i] for i in self.followup_ids if i in self._messages]

    async def wait_for_ack(self, timeout: float = DEFAULT_WAIT_S) -> float:
        """Waits for the first accepted response; returns the acknowledgement latency."""
        return await self._feed.wait_until(lambda: self.ack_latency, timeout, self.describe)

    async def wait_for_original(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = DEFAULT_WAIT_S,
    ) -> StoredMessage:
        """The original response once it exists (and satisfies ``predicate``, if given)."""

        def check() -> StoredMessage | None:
            message = self.original
            if message is None or message.deleted:
                return None
            return message if predicate is None or predicate(message) else None

        return await self._feed.wait_until(check, timeout, self.describe)

    async def wait_for_answer(self, timeout: float = DEFAULT_WAIT_S) -> StoredMessage:
        """What the member reads in reply: the original response once it is more than a
        "thinking…", or the first follow-up once that was deleted (a bot that refuses after a
        public "thinking…" deletes it, so that the refusal is private)."""

        def check() -> StoredMessage | None:
            original = self.original
            if original is not None and not original.deleted:
                return None if original.is_loading else original
            return next(iter(self.followups), None)

        return await self._feed.wait_until(check, timeout, self.describe)

    async def wait_for_original_deleted(self, timeout: float = DEFAULT_WAIT_S) -> StoredMessage:
        """The original response once it was deleted (a response the bot withdrew)."""

        def check() -> StoredMessage | None:
            message = self.original
            return message if message is not None and message.deleted else None

        return await self._feed.wait_until(check, timeout, self.describe)

    async def wait_for_followup(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = DEFAULT_WAIT_S,
    ) -> StoredMessage:
        """The first follow-up message (satisfying ``predicate``, if given)."""

        def check() -> StoredMessage | None:
            matching = (m for m in self.followups if predicate is None or predicate(m))
            return next(matching, None)

        return await self._feed.wait_until(check, timeout, self.describe)

    async def wait_for_autocomplete(self, timeout: float = DEFAULT_WAIT_S) -> list[Json]:
        return await self._feed.wait_until(
            lambda: self.autocomplete_choices, timeout, self.describe
        )

    async def wait_for_modal(self, timeout: float = DEFAULT_WAIT_S) -> Json:
        return await self._feed.wait_until(lambda: self.modal, timeout, self.describe)

    def describe(self) -> str:
        lines = [
            f"interaction {self.id} ({self.label}): acknowledged after {self.ack_latency} s, "
            f"response type {self.response_type}, Discord error codes {self.error_codes}",
            f"  original: {self.original!r}",
            *(f"  followup: {m!r}" for m in self.followups),
        ]
        if self._violations:
            lines.append(f"  violations so far: {self._violations}")
        return "\n".join(lines)

    __repr__ = describe
