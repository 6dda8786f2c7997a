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
from bot.user_errors import Reason, UserError, as_sentence
from db import refusals as store

log = logging.getLogger(__name__)

# Longer sentences (a rule listing many channels or models) are cut here.
MAX_SENTENCE_CHARS = 300


def told_refusal(message: str, reason: Reason, *, of: str | None = None) -> UserError:
    """``message`` as the member is told a refusal: a sentence (``as_sentence``, as every
    refusal is told, whichever parser wrote it) after "⛔", and after which of the request's
    jobs it refuses (``of``: "Repeat 2 of 3") when not the whole request."""
    sentence = as_sentence(message)
    return UserError(f"⛔ {sentence}" if of is None else f"⛔ {of}: {sentence}", reason)


def quota_refused(
    refused: QuotaExceeded, *, as_relax: QuotaExceeded | None = None, of: str | None = None
) -> UserError:
    """The member's limits, relax caps or the queue bound refusing a job (its message:
    which, and when it resets or how to make room), as one sentence: what they are told and
    what their server's dashboard shows (under its reason), on every path.

    Made only to be told, so the one place ``easel_quota_refusals`` is counted: once per
    sentence, when the member's limits or the relax caps (``Reason.QUOTA``) refuse the job
    or, given ``as_relax``, its free form, whatever the reason it is recorded under (limits
    then the bound: recorded ``QUEUE``; the bound then the relax caps: ``QUOTA``). The queue
    bound alone (``Reason.QUEUE``, for both forms) is not counted, and a check whose answer
    is not told counts nothing.

    ``as_relax``: why the job's free ``--relax`` form is refused too, when the job may yet
    be free (its picture not read): said after, where it differs, and its reason is the
    one recorded, as a free job meets only that. ``of``: which of the request's jobs
    (``told_refusal``)."""
    message, reason = refused.message, refused.reason
    if as_relax is not None and as_relax.message != message:
        message, reason = f"{message} As a --relax job: {as_relax.message}", as_relax.reason
    if Reason.QUOTA in (refused.reason, None if as_relax is None else as_relax.reason):
        metrics.quota_refused()
    return told_refusal(message, reason, of=of)


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
        """Count the refusal and keep it for the server's dashboard, unless Discord's failure
        caused it (``Reason.DISCORD``: counted only, none of the member's doing); never
        raises."""
        if guild_id is None:
            return
        metrics.member_refused(reason)
        if reason is Reason.DISCORD:
            return
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
