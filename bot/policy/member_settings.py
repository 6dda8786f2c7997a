"""Personal /imagine defaults: validated on the way in, applied where an option, a prompt flag
and a named preset leave a gap (``bot.presets.over_saved_settings``)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection

import aiosqlite

from bot.memo import MEMBERS_KEPT, READ_AHEAD_PAGE, UNDATED, Memo, ReadAhead, undated
from bot.requests import check_saved_values
from db import jobs as journal
from db import user_settings as store
from db.database import transaction
from db.user_settings import UserSettings

__all__ = ["MemberSettings", "UserSettings"]


def _check_values(settings: UserSettings) -> None:
    check_saved_values(
        settings.steps, settings.cfg, settings.size, settings.clip_skip, settings.sampler
    )


class MemberSettings:
    """Read on every /imagine before it is acknowledged, so kept in memory after the first
    read; this process is the only writer (updates and /forget-me go through here)."""

    def __init__(self, conn: aiosqlite.Connection, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._cached: Memo[int, UserSettings] = Memo(MEMBERS_KEPT)
        # Every member who saved settings, once ``read_ahead`` ran (and each update since):
        # another member's are the defaults, known without a read.
        self._saved: ReadAhead[int] = ReadAhead()

    async def read_ahead(self) -> None:
        """Read once who has saved settings (the bot's start, in the background): the first
        /imagine of a member who has not (most) then waits on no read; one before this ends
        reads, as without it."""
        await self._saved.read(undated(store.members_with_settings(self._conn, READ_AHEAD_PAGE)))

    async def get(self, user_id: int) -> UserSettings:
        if self._saved.lacks(user_id):
            return UserSettings()
        return await self._cached.get(user_id, lambda: store.get(self._conn, user_id))

    def forget(self, user_id: int) -> None:
        """Drop the member's settings from memory (their rows were erased)."""
        self._cached.drop(user_id)

    async def update(
        self,
        user_id: int,
        changes: dict[str, object],
        *,
        clear: bool = False,
        back_to_default: Collection[str] = (),
    ) -> UserSettings:
        """Apply the given changes (None values are ignored) on top of the saved settings,
        or on top of nothing with ``clear``, those named in ``back_to_default`` forgotten
        first (a mistaken default undone alone); raises ``RequestError`` for a bad value.
        Private results asked for cover the member's jobs not delivered yet too, in the same
        transaction (``make_undelivered_private``); turned off, they leave those private."""
        base = UserSettings() if clear else await store.get(self._conn, user_id)
        if back_to_default:
            fresh = UserSettings()
            base = dataclasses.replace(
                base, **{name: getattr(fresh, name) for name in back_to_default}
            )
        given = {name: value for name, value in changes.items() if value is not None}
        # Only the values changed are checked: one saved before such values were checked is
        # refused where it is used, naming where it is kept (``refused_as_saved``), and
        # blocks no other change.
        _check_values(dataclasses.replace(UserSettings(), **given))  # type: ignore[arg-type]
        updated = dataclasses.replace(base, **given)  # type: ignore[arg-type]
        async with transaction(self._conn):
            await store.put(self._conn, user_id, updated, self._clock())
            if given.get("private_results"):
                await journal.make_undelivered_private(self._conn, user_id)
        self._saved.add(((user_id, UNDATED),))
        self._cached.put(user_id, updated)
        return updated
