"""What the member was refused, kept for their server's admins (the dashboard's Refusals panel).

Recorded after the member was answered, so SQLite never delays a reply, and never at the cost
of one: a failed write is logged and forgotten. Only refusals in a server are kept (a direct
message has no admins to show them to); no prompt is stored, and for a member who keeps their
results private not even the sentence, only its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiosqlite

from bot import metrics
from bot.jobs.accounting import QuotaExceeded
from bot.policy.member_settings import MemberSettings
from bot.user_errors import Reason, UserError
from db import refusals as store

log = logging.getLogger(__name__)

# Longer sentences (a rule listing many channels or models) are cut here.
MAX_SENTENCE_CHARS = 300


def quota_refused(refused: QuotaExceeded) -> UserError:
    """The member's limits or the queue bound refusing a job (its message: which, and when
    it resets or how to make room), as one sentence: what they are told and what their
    server's dashboard shows (under ``refused.reason``), on every path."""
    return UserError(f"⛔ {refused.message}", refused.reason)


class RefusalLog:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        member_settings: MemberSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._member_settings = member_settings
        self._clock = clock

    async def record(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        reason: Reason,
        sentence: str,
    ) -> None:
        """Count the refusal and keep it for the server's dashboard; never raises."""
        if guild_id is None:
            return
        metrics.member_refused(reason)
        try:
            private = (await self._member_settings.get(user_id)).private_results
            await store.record(
                self._conn,
                store.NewRefusal(
                    guild_id,
                    channel_id,
                    user_id,
                    reason.value,
                    None if private else sentence[:MAX_SENTENCE_CHARS],
                    self._clock(),
                ),
            )
        except Exception:
            log.exception("could not record a refusal (%s) for user %s", reason.value, user_id)
