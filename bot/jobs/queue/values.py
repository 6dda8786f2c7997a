"""The values the job queue takes and hands out (a submission, a finished job, a cancel's
outcome, a job's state), and what it asks of the sink that posts results and of the gate
that may end a job at its start."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.jobs import accounting
from bot.jobs.scheduler import PriorityClass
from db import jobs as journal
from inference.types import RenderRequest, StepProgress


@dataclass(frozen=True)
class Submission:
    kind: str
    request: RenderRequest
    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    parent_job_id: str | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    interaction_created_at: float | None = None
    role_ids: tuple[int, ...] = ()
    is_admin: bool = False
    priority: PriorityClass = PriorityClass.STANDARD
    # How the result must be posted: the interaction's attachment limit, spoilered or not,
    # seen by the member alone or not.
    filesize_limit: int | None = None
    spoiler: bool = False
    private: bool = False
    # Made in an age-restricted channel: its pictures stay age-restricted whatever the
    # channel's flag later says (cogs.visibility.made_age_restricted).
    age_restricted: bool = False
    # Made in a thread (or forum post): its channel, as the interaction said; the thread is
    # enabled with it, though Discord may not show Easel the thread later.
    thread_parent_id: int | None = None
    # What its quota reservation's estimate reckons its size from where the request names
    # none: its model's native side (1024 for SDXL) and the size of the picture it edits
    # (/vary, /inpaint, a picture's buttons), as read where it was decoded.
    render_size: accounting.RenderSize = accounting.UNKNOWN_RENDER_SIZE

    @property
    def member(self) -> accounting.Member:
        return accounting.Member(self.user_id, self.guild_id, self.role_ids, self.is_admin)


@dataclass(frozen=True)
class ResultImage:
    path: Path
    seed: int
    infotext: str


@dataclass(frozen=True)
class FinishedJob:
    """What a delivery needs to know about a job that ended: done, failed or cancelled."""

    job_id: str
    kind: str
    succeeded: bool
    error: str | None
    request: RenderRequest
    user_id: int
    guild_id: int | None
    channel_id: int | None
    application_id: int | None
    interaction_token: str | None
    interaction_created_at: float | None
    images: tuple[ResultImage, ...]
    filesize_limit: int | None = None
    spoiler: bool = False
    private: bool = False
    # Submitted in the open, made private by its maker's /settings since (``private`` set
    # too): its interaction's response is public (``db.jobs.make_undelivered_private``).
    private_since_submit: bool = False
    age_restricted: bool = False  # made in an age-restricted channel (Submission's)
    thread_parent_id: int | None = None  # made in a thread: its channel (Submission's)
    # A moderator deleted the picture it was made from (or its result) while it was queued or
    # rendered (``db.history.withdraw_deleted_results``): it is not posted.
    withdrawn: bool = False
    # Withdrawn with the job it was made from (that one's withdrawn too), not for a deletion
    # of its own message.
    withdrawn_with_source: bool = False
    # That job is another member's (read with ``withdrawn_with_source``): its withdrawal is
    # no doing of this job's maker, who is refunded (``refunded_withdrawal``).
    source_made_by_another: bool = False
    # Withdrawn because its channel (or the one it was made from) was deleted, not by a
    # moderator's deletion of it: refunded, as its maker did nothing.
    withdrawn_with_channel: bool = False
    # First stopped by a moderator's own act (their Cancel, /easel-mod withdraw, an admin's
    # cancel), as its stop recorded (``journal.StoppedBy``); not by a deletion of its message,
    # which Discord does not say who made, nor after its maker's own cancel.
    moderator_stopped: bool = False
    # Stopped by a stop its maker was put under (a ban, a kick, a timeout: ``bot.bans``), as
    # recorded (``journal.StoppedBy.IMPOSED``), not their own cancel.
    imposed_stop: bool = False
    # Why it was ended before its render, by the rules of now (``StartGate``), or withheld
    # at delivery (``History.withhold_job``: a delivery retried after a crash): it is posted
    # nowhere, refunded whole, and its maker is told this, privately; None: neither.
    withheld: str | None = None
    # The PNG a job of several pictures is posted as (bot.images.posted_grid_png), composed
    # from their pixels while they were stored; None: compose it from the stored files.
    composed: bytes | None = None
    # When it was journaled (seconds since the epoch): a stop after it withholds its result
    # (bot.bans.StoppedMembers); 0.0 reads as before any stop.
    created_at: float = 0.0
    # When a post of it was last tried, by a delivery before this one (None: never): that
    # post, or an older try's, may have landed (its answer lost, or Easel stopped before
    # recording it), so the sink looks for them before posting in a channel again, from when
    # it finished (``finished_at``) and from that try (a try may fail before it looks).
    post_attempted_at: float | None = None
    # When it ended (seconds since the epoch): no post of it is older. None: read as unknown.
    finished_at: float | None = None
    # Its first posts recorded in its channel (``job_messages``): its interaction's original
    # response once it showed progress (a delivery after a restart points it to the result),
    # which an edit of a try may have turned into the result, and its result's post once linked.
    posted_ids: tuple[int, ...] = ()


class Privately(Enum):
    """``ResultSink.deliver``'s answer for an outcome its maker alone was shown (an ephemeral
    answer, a direct message), in no channel."""

    TO_ITS_MAKER = "private"


PRIVATELY = Privately.TO_ITS_MAKER


class ResultSink(Protocol):
    async def deliver(self, job: FinishedJob) -> int | Privately | None:
        """Post the result (or the failure); returns the message's id when it was posted in
        the server's channel, ``PRIVATELY`` when its maker alone was shown it, None when it
        was posted nowhere (withheld or withdrawn, its message or channel deleted, its
        maker's direct messages closed: the sink logs why). The sink links a channel's post
        to its job itself, as soon as it is posted (``History.result_posted``): the queue
        records only the delivery."""


@runtime_checkable
class RetractingSink(ResultSink, Protocol):
    """A sink that can delete a result it just posted, for a job erased while it was posted
    (its maker's /forget-me), which nothing else would delete."""

    async def retract(self, job: FinishedJob, message_id: int) -> None: ...


@runtime_checkable
class ForgettingSink(ResultSink, Protocol):
    """A sink that keeps something of a job between its delivery's tries (its progress
    message, to edit into the result), told when no try follows: its delivery given up,
    ``why`` (what kept its outcome from being posted, as its maker reads it)."""

    def given_up(self, job_id: str, why: str) -> None: ...


# A start gate's answer for a job that ends as a cancel ends it (its maker was stopped in its
# server since: ``bot.bans``): recorded "cancelled", refunded whole, its maker told so.
# What a member is told of a render that raised anything but ``RenderFailed`` (a bug, not their
# input), here or on a broker's worker: plain words, no class name nor path, which stay in the
# log line that the job's reference (added after it) names.
INTERNAL_FAILURE = (
    "Something went wrong on Easel's side while rendering, and nothing was charged. Try again "
    "later; if it keeps failing, a server admin can look it up by its reference"
)
STOPPED_BEFORE_ITS_START = "cancelled"
# Why a job of a server EASEL_ALLOWED_SERVERS leaves out ends before it renders (queued before
# the list was set, or before its server was taken off it), as its maker is told.
SERVER_NOT_SERVED = "Easel's operator no longer serves the server it was made in"


class StartGate(Protocol):
    async def why_not_started(self, job: FinishedJob) -> str | None:
        """Why ``job`` (no pictures yet) must not render: the cheap rules of now that would
        withhold its result (``bot.policy.delivery.placed_under_rules_of_now``), said as its
        maker is told, or ``STOPPED_BEFORE_ITS_START``; None: it renders."""

    def start_waits_for(
        self, job_id: str, user_id: int, guild_id: int | None
    ) -> Callable[[], Awaitable[None]] | None:
        """What job ``job_id`` (``user_id``'s in ``guild_id``), handed out to start, must wait
        for before ``why_not_started`` can tell (its maker's standing, asked of Discord at
        start-up: ``bot.bans``): the wait, which it waits out of its slot's way, then queues
        again (a cancel ends it: the job never started); None: nothing. Asked before the
        batch's first await; and of a result before its post, which waits out of its lane
        (``Delivery.in_turn``)."""


ProgressListener = Callable[[str, StepProgress], None]
# Told of a job stopped while its batch renders on for others' jobs (``Cancels.cancel``), and
# whether its owner pays its GPU time until the stop: its member is shown at once that it
# ended, the notice of its end following as soon as that end is written, not once its
# batch's render ends (``JobQueue._stopped_in_batch``).
StoppedListener = Callable[[str, bool], None]


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: it will not run
    STOPPING = "stopping"  # it was running: it stops at the next step; its owner pays its time
    # It was running in a batch that renders on for others' jobs: it is stopped for its owner
    # now (no more progress, no pictures), who pays its share of the time until now.
    STOPPED_IN_BATCH = "stopped-in-batch"
    STOPPING_FREE = "stopping-free"  # it was running: it stops, refunded whole (not the owner's
    # choice, or stopped before its render began)
    # An imposed stop only (``imposed``): another cancel (its owner's) was ending the queued
    # job; the stop stands should that cancel's end be refused. Not the stop's doing.
    BEING_CANCELLED = "being-cancelled"
    NOT_YOURS = "not-yours"
    FINISHED = "finished"  # too late: it already ended
    UNKNOWN = "unknown"


class KeptEnd(StrEnum):
    """How a job ended whose end is kept until the journal takes it (``JobEnds.retry_kept``:
    Easel's storage full or busy)."""

    RENDERED = "rendered"  # its result is posted then, and charged
    FAILED = "failed"  # its member is told why then, refunded


@dataclass(frozen=True)
class JobState:
    status: journal.JobStatus
    position: int | None  # jobs that start before it; None unless queued
    eta_s: float | None  # seconds until it should be finished; None unless queued or running
    # Further back than the scheduler counts (a deep queue): ``position`` and ``eta_s`` are
    # lower bounds, shown as such.
    at_least: bool = False
    # Restored at start-up and handed out, it waits out of the queue for Discord's answer
    # about its maker (``bot.bans``): neither queued at a place nor rendering.
    awaiting_check: bool = False
    # Rendered or failed, its end kept until the journal takes it (``JobEnds.retry_kept``):
    # no longer rendering, nor to be cancelled. None: no end kept.
    end_unrecorded: KeptEnd | None = None
    # Cancelled, its end not written yet (``Cancels.stopping``): neither queued nor rendering
    # for its member, whatever the journal says until the end is written.
    stopping: bool = False
    # Who stopped it, where known (``JobQueue.state``): the first stop recorded, or the one
    # whose end is being written; None: not known here (or not stopping).
    stopped_by: journal.StoppedBy | None = None

    def place(self) -> str:
        """A queued job's place as its member reads it: "position 3", or "position over 100"
        when it is further back than that."""
        if self.position is None:
            raise ValueError("only a queued job has a place in the queue")
        return (
            f"position over {self.position}" if self.at_least else f"position {self.position + 1}"
        )

    def done_in(self) -> str | None:
        """When it should be finished, as a member reads it ("done in about 40 s", "done in at
        least 900 s": further back than the count, only the counted jobs ahead are summed, so
        the bound is rounded down, never up); an estimate under a second reads "done in a
        moment" ("about 0 s" would read as a broken estimate); None: no estimate."""
        if self.eta_s is None:
            return None
        if self.at_least:
            return f"done in at least {math.floor(self.eta_s)} s"
        if self.eta_s < 1:
            return "done in a moment"
        return f"done in about {self.eta_s:.0f} s"
