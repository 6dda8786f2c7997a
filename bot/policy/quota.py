"""Quota policy: which limits apply to a user, and whether a request fits them.

Pure: no I/O and no clock of its own (``now`` is a Unix timestamp passed in). Usage comes from
the ledger (``db.quotas.usage``) and counts committed jobs plus outstanding reservations.
Periods are calendar periods in UTC: the day, the ISO week (starting Monday) and the month.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol

__all__ = [
    "DEFAULT_LIMITS",
    "RELAX_MAX_UNFINISHED_JOBS",
    "RELAX_MAX_UNFINISHED_PICTURES",
    "UNLIMITED",
    "Cost",
    "Period",
    "QuotaLimits",
    "Refusal",
    "RelaxRefusal",
    "Unfinished",
    "check",
    "check_relax",
    "most_generous",
    "period_start",
    "reset_at",
    "resolve_limits",
]


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


_PERIOD_WORDS = {Period.DAY: "today", Period.WEEK: "this week", Period.MONTH: "this month"}


@dataclass(frozen=True)
class QuotaLimits:
    """Limits per calendar period; None means unlimited. Field names are the ledger's columns."""

    images_per_day: int | None = None
    images_per_week: int | None = None
    images_per_month: int | None = None
    gpu_seconds_per_day: float | None = None
    gpu_seconds_per_week: float | None = None
    gpu_seconds_per_month: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.as_mapping().items():
            if value is not None and value < 0:
                raise ValueError(f"{name} must be 0 or more (or None for unlimited), got {value}")

    def as_mapping(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, float | None]) -> QuotaLimits:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown quota limits {unknown}; known: {sorted(known)}")
        return cls(
            images_per_day=_count(values.get("images_per_day")),
            images_per_week=_count(values.get("images_per_week")),
            images_per_month=_count(values.get("images_per_month")),
            gpu_seconds_per_day=_seconds(values.get("gpu_seconds_per_day")),
            gpu_seconds_per_week=_seconds(values.get("gpu_seconds_per_week")),
            gpu_seconds_per_month=_seconds(values.get("gpu_seconds_per_month")),
        )

    def limit(self, resource: Resource, period: Period) -> float | None:
        value: float | None = getattr(self, f"{resource}_per_{period.value}")
        return value


Resource = Literal["images", "gpu_seconds"]


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


UNLIMITED = QuotaLimits()
DEFAULT_LIMITS = QuotaLimits(images_per_day=100)


class Amount(Protocol):
    """Anything with an image count and GPU-seconds: a cost, or the ledger's ``Usage``."""

    @property
    def images(self) -> int: ...

    @property
    def gpu_seconds(self) -> float: ...


@dataclass(frozen=True)
class Cost:
    images: int
    gpu_seconds: float


def most_generous(candidates: Iterable[QuotaLimits]) -> QuotaLimits | None:
    """Per limit, the largest of the candidates (unlimited beats any number); None if none."""
    candidates = list(candidates)
    if not candidates:
        return None
    merged: dict[str, float | None] = {}
    for field in dataclasses.fields(QuotaLimits):
        values = [getattr(limits, field.name) for limits in candidates]
        merged[field.name] = None if None in values else max(values)
    return QuotaLimits.from_mapping(merged)


def resolve_limits(
    *,
    is_admin: bool,
    user_override: QuotaLimits | None,
    role_overrides: Iterable[QuotaLimits],
    guild_default: QuotaLimits | None,
    builtin: QuotaLimits = DEFAULT_LIMITS,
) -> QuotaLimits:
    """The limits of a member in one guild. The first level that says anything wins, whole:
    admin of this guild (unlimited), the user's own override, the most generous of their roles'
    overrides, the guild default, the built-in."""
    if is_admin:
        return UNLIMITED
    for candidate in (user_override, most_generous(role_overrides), guild_default):
        if candidate is not None:
            return candidate
    return builtin


def period_start(period: Period, now: float) -> float:
    """The Unix time the calendar period containing ``now`` began (UTC)."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        start = midnight
    elif period is Period.WEEK:
        start = midnight - timedelta(days=midnight.weekday())
    else:
        start = midnight.replace(day=1)
    return start.timestamp()


def reset_at(period: Period, now: float) -> float:
    """The Unix time the calendar period containing ``now`` ends and its usage resets (UTC)."""
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period is Period.DAY:
        end = start + timedelta(days=1)
    elif period is Period.WEEK:
        end = start + timedelta(weeks=1)
    elif start.month == 12:
        end = start.replace(year=start.year + 1, month=1)
    else:
        end = start.replace(month=start.month + 1)
    return end.timestamp()


@dataclass(frozen=True)
class Refusal:
    """Why a request does not fit; ``message`` is ready to show the user."""

    resource: Resource
    period: Period
    limit: float
    used: float
    requested: float
    resets_at: float

    @property
    def message(self) -> str:
        unit = "images" if self.resource == "images" else "GPU-seconds"
        when = _PERIOD_WORDS[self.period]
        reset = f"the limit resets <t:{int(self.resets_at)}:R>."
        if self.limit == 0:  # asking for less cannot help (a server's or the DM limit)
            return (
                f"You are allowed no {unit} per {self.period.value} here, --relax jobs "
                "included; ask the admins."
            )
        if self.requested > self.limit:
            needs = (
                f"This request needs {_amount(self.requested, unit)} but the limit is "
                f"{_amount(self.limit, unit)} per {self.period.value}"
            )
            if self.used < self.limit:
                return f"{needs}; ask for less."
            # Asking for less cannot help before the reset either. A member asks for pictures,
            # not GPU-seconds (the cost of the pictures, steps and size asked for).
            fewer = f"at most {_number(self.limit)}" if self.resource == "images" else "less"
            used = f"you have used {_number(self.used)} {when}"
            return f"{needs} and {used}; ask for {fewer} after {reset}"
        if self.used >= self.limit:
            return (
                f"You have used {_number(self.used)} of {_number(self.limit)} {unit} {when}; "
                f"{reset}"
            )
        left = self.limit - self.used
        return (
            f"This request needs {_amount(self.requested, unit)} but you have "
            f"{_number(left)} of {_number(self.limit)} left {when}; {reset}"
        )


def _amount(value: float, unit: str) -> str:
    """``value`` of ``unit`` (a plural: "images", "GPU-seconds"), singular for exactly 1."""
    number = _number(value)
    return f"{number} {unit.removesuffix('s') if number == '1' else unit}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def check(
    usage: Mapping[Period, Amount], limits: QuotaLimits, cost: Amount, now: float
) -> Refusal | None:
    """None when ``cost`` fits every limit on top of ``usage`` (per period, from the ledger);
    a limit of 0 fits nothing, not even a free job, and any other fits a free job (``--relax``)
    however far past it the member's spending went (GPU-seconds are measured after the
    render, and an admin may lower a limit).

    Of several exceeded limits the one that resets last is reported: only then can the
    request go through. ``usage`` needs an entry for every period that has a limit.
    """
    free = cost.images == 0 and cost.gpu_seconds == 0
    refusals: list[Refusal] = []
    for period in Period:
        for resource in ("images", "gpu_seconds"):
            limit = limits.limit(resource, period)
            if limit is None:
                continue
            if period not in usage:
                raise ValueError(
                    f"usage for the {period.value} is needed: {resource}_per_{period.value} "
                    "is limited"
                )
            used: float = getattr(usage[period], resource)
            requested: float = getattr(cost, resource)
            # A limit of 0 is the admins' "none at all": even a free (--relax) job is refused.
            if limit == 0 or (not free and used + requested > limit):
                refusals.append(
                    Refusal(resource, period, limit, used, requested, reset_at(period, now))
                )
    return max(refusals, key=lambda refusal: refusal.resets_at, default=None)


# ``--relax`` costs no quota, so what a member may have waiting or running in a server (all
# their jobs count) when a relax job is taken is bounded instead, in jobs and in pictures: a
# /compare grid is one job of up to 16 pictures. 16 = 4 jobs of /imagine's 4 pictures, which
# stays allowed. These bound the queue, not spending: a server's admins are held to them too.
RELAX_MAX_UNFINISHED_JOBS = 4
RELAX_MAX_UNFINISHED_PICTURES = 16


@dataclass(frozen=True)
class Unfinished:
    """Jobs waiting or running (or asked for) and the pictures they make."""

    jobs: int
    pictures: int


@dataclass(frozen=True)
class RelaxRefusal:
    """Why a ``--relax`` request is not taken now; ``message`` is ready to show the user."""

    waiting: Unfinished  # the member's jobs already waiting or running here
    asked: Unfinished  # what this request adds

    @property
    def message(self) -> str:
        if self.waiting.jobs + self.asked.jobs > RELAX_MAX_UNFINISHED_JOBS:
            also = "" if self.asked.jobs == 1 else f" and this asks for {self.asked.jobs}"
            return (
                "Not queued: --relax (or `Relax: True` in pasted settings) is free, so it is "
                "taken while you have at most "
                f"{RELAX_MAX_UNFINISHED_JOBS} jobs waiting or running here, this one included; "
                f"you have {self.waiting.jobs}{also}."
            )
        return (
            "Not queued: --relax (or `Relax: True` in pasted settings) is free, so it is "
            "taken while you have at most "
            f"{RELAX_MAX_UNFINISHED_PICTURES} pictures waiting or being made here, this "
            f"request's included; you have {self.waiting.pictures} and this asks for "
            f"{self.asked.pictures}."
        )


def check_relax(waiting: Unfinished, asked: Unfinished) -> RelaxRefusal | None:
    """None when a free (``--relax``) request of ``asked`` fits beside what the member has
    ``waiting`` or running in this server (see ``RELAX_MAX_UNFINISHED_JOBS``)."""
    if (
        waiting.jobs + asked.jobs > RELAX_MAX_UNFINISHED_JOBS
        or waiting.pictures + asked.pictures > RELAX_MAX_UNFINISHED_PICTURES
    ):
        return RelaxRefusal(waiting, asked)
    return None
