"""The job queue (``JobQueue``: journal in SQLite, fair scheduling, one dispatcher per render
slot) and what it is made of: the slots it renders on (``slots``), the values it takes and
hands out (``values``), jobs admitted and journaled (``admission``), cancelled and stopped
(``cancels``), the journal's writes tried again (``journal_writes``), jobs' ends recorded
(``ends``) and their outcomes delivered (``delivery``)."""

from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue.admission import job_gone
from bot.jobs.queue.delivery import DeliveryRetries
from bot.jobs.queue.job_queue import MAX_RENDER_ATTEMPTS, JobQueue
from bot.jobs.queue.slots import (
    BatchRenderSlot,
    BrokeredSlot,
    JobCopies,
    MeasuredImages,
    PreparingSlot,
    RenderSlot,
    RenderStoppedAfter,
    SlotUnavailable,
    WarmingSlot,
)
from bot.jobs.queue.values import (
    PRIVATELY,
    SERVER_NOT_SERVED,
    STOPPED_BEFORE_ITS_START,
    CancelOutcome,
    FinishedJob,
    ForgettingSink,
    JobState,
    KeptEnd,
    Privately,
    ResultImage,
    ResultSink,
    RetractingSink,
    StartGate,
    Submission,
)
from db.jobs import StoppedBy  # who stopped a job, for the cogs' words (they never import db)

__all__ = [
    "MAX_RENDER_ATTEMPTS",
    "PRIVATELY",
    "SERVER_NOT_SERVED",
    "STOPPED_BEFORE_ITS_START",
    "BatchRenderSlot",
    "BrokeredSlot",
    "CancelOutcome",
    "DeliveryRetries",
    "FinishedJob",
    "ForgettingSink",
    "JobCopies",
    "JobQueue",
    "JobState",
    "KeptEnd",
    "MeasuredImages",
    "PreparingSlot",
    "Privately",
    "QuotaExceeded",
    "RenderSlot",
    "RenderStoppedAfter",
    "ResultImage",
    "ResultSink",
    "RetractingSink",
    "SlotUnavailable",
    "StartGate",
    "StoppedBy",
    "Submission",
    "WarmingSlot",
    "job_gone",
]
