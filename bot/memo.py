"""Rows read from SQLite kept in memory, for what is read before an interaction is acknowledged
(pure: no discord, no torch, no SQL; the caller passes the read).

This process is the only writer of what it caches (guild settings, member settings, the quota
ledger), and every writer tells the memo: it stores the new value (write-through), updates it
or drops it. A read that overlapped a change of its key is returned but not kept, since it
may predate the change. Callers that miss the same key at once share one read (a burst of
commands from one member, or the first ones of a guild, reads once).

A memo given ``ttl_s`` serves reads no writer tells it of: a value is read again once that
old, and is that stale at most; one no one asks again goes as the memo keeps others.

``ExpiringKeys`` keeps what was lately true (Discord's answers, events heard) for a while.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Members whose quota limits, spending and settings are kept, those who asked last; another
# member's are read again. Measured at this size: spending 9.1 MiB, limits 13.9 MiB (ten roles
# a member), settings 2.0 MiB.
MEMBERS_KEPT = 10_000
# Members known at most to have no row (no spending lately, no saved settings: read ahead at the
# start); past it, each one's first check reads as before. Measured at this size: those who
# spent, each with their latest row's time, 18.9 MiB (99,492 of them, 18-digit ids,
# tracemalloc), those who saved settings, ``UNDATED``, 8.1 MiB (99,744).
MEMBERS_READ_AHEAD = 100_000
# Rows a read-ahead query reads at most: a member's read sent meanwhile waits on one such query
# (aiosqlite's one thread a connection), and the loop adds one such page at a time.
READ_AHEAD_PAGE = 1_000
# Values past ``ttl_s`` a memo drops, the oldest kept first, each time it keeps one: more than
# one, so those no one asks again go while new ones come, each keep's work bounded.
EXPIRED_SWEPT_PER_KEEP = 2
# The time of a key whose rows' times are never asked (``undated``): one float for all of them,
# so such a set costs little more than its keys; none is older than asked, or let go.
UNDATED = math.inf


class ReadAhead(Generic[K]):
    """The keys a read at the start found, each with the time of its latest row (``read``),
    joined by each one written since (``add``): once read, a key not among them, or whose
    latest row is older than asked, has no row since then, known without a read. Keys whose
    rows are all older than will be asked again are let go (``forget_before``). Past
    ``MEMBERS_READ_AHEAD`` keys, or when a read fails, it is given up and nothing is known,
    until it starts over (``start_over``) and the next read ends."""

    def __init__(self) -> None:
        self._latest: dict[K, float] | None = {}
        # Rows older than this were not read, or were let go: nothing is known of them.
        self._since = -math.inf
        self.complete = False

    def add(self, rows: Iterable[tuple[K, float]]) -> None:
        """Rows written (or read) at the times given: the latest of a key's is kept, so a
        read that ends after a newer write does not take it back."""
        if self._latest is None:
            return
        latest = self._latest
        for key, at in rows:
            if key not in latest or latest[key] < at:
                latest[key] = at
        if len(latest) > MEMBERS_READ_AHEAD:
            self._latest = None

    async def read(
        self, pages: AsyncIterable[Iterable[tuple[K, float]]], since: float = -math.inf
    ) -> None:
        """Join the rows of ``pages``, every key's latest row at ``since`` or later (united,
        not replaced: a row written during the read is in already), the rest left unread once
        given up."""
        self._since = max(self._since, since)
        try:
            async for page in pages:
                self.add(page)
                if self._latest is None:
                    break
        except BaseException:
            self._latest = None  # part read: given up
            raise
        finally:
            self.complete = True

    def lacks(self, key: K, since: float = -math.inf) -> bool:
        """Whether ``key`` is known to have no row at ``since`` or later (by default: none)."""
        if not self.complete or self._latest is None or since < self._since:
            return False
        latest = self._latest.get(key)
        return latest is None or latest < since

    def forget_before(self, since: float) -> bool:
        """Let go of the keys whose rows are all older than ``since``, before which nothing
        will be asked again (a quota period began): gone, they lack rows since then as much
        as kept. It reads every key, once for each new ``since``; whether ``since`` was new."""
        if since <= self._since:
            return False
        self._since = since
        if self._latest is not None:
            for key in [key for key, at in self._latest.items() if at < since]:
                del self._latest[key]
        return True

    def start_over(self) -> bool:
        """Begin again if given up and no read runs (what was let go may leave room): the
        keys added from now on are kept, all trusted once the next ``read`` ends. Whether it
        began again."""
        if self._latest is not None or not self.complete:
            return False
        self._latest = {}
        self.complete = False
        return True


async def undated(pages: AsyncIterable[Iterable[K]]) -> AsyncIterator[list[tuple[K, float]]]:
    """``pages`` of keys whose rows' times are never asked, as ``ReadAhead.read`` takes them."""
    async for page in pages:
        yield [(key, UNDATED) for key in page]


class Memo(Generic[K, V]):
    def __init__(
        self,
        max_size: int | None = None,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # With ``max_size``, the least recently used value goes first (values without end).
        self._max_size = max_size
        # With ``ttl_s``, a value kept that long is read again (``clock`` says when).
        self._ttl_s = ttl_s
        self._clock = clock
        self._values: dict[K, V] = {}
        # With ``ttl_s`` only; in the order kept (the oldest first), so what expired is found
        # at its start: no value is kept long past its life, asked again or not. An ordered
        # dict, whose first item is found at once (a plain dict used as a queue walks the
        # slots its removals left: 100 µs a keep at 100,000 values).
        self._kept_at: OrderedDict[K, float] = OrderedDict()
        self._reading: dict[K, asyncio.Task[V]] = {}  # reads no change has overtaken
        # Every read in flight, overtaken or not, by key: a change marks them, so that what a
        # change leaves behind lasts only while a read that began before it does.
        self._in_flight: dict[K, list[_Read]] = {}

    async def get(self, key: K, read: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """The kept value, or ``read()``'s, kept unless the key changed while it ran."""
        if self._holds(key):
            return self._used(key)
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(key, read))
            self._reading[key] = reading
        # Shielded: one caller giving up does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    def kept(self, key: K) -> V | None:
        """The kept value, without reading (None: none kept)."""
        return self._used(key) if self._holds(key) else None

    def _holds(self, key: K) -> bool:
        """Whether a value of ``key`` is kept, and not older than ``ttl_s`` (dropped if so)."""
        if key not in self._values:
            return False
        if self._ttl_s is not None and self._clock() - self._kept_at[key] >= self._ttl_s:
            self._forget(key)
            return False
        return True

    def _forget(self, key: K) -> None:
        self._values.pop(key, None)
        self._kept_at.pop(key, None)

    def _used(self, key: K) -> V:
        if self._max_size is not None:  # the most recently used last
            self._values[key] = self._values.pop(key)
        return self._values[key]

    async def _read(self, key: K, read: Callable[[], Coroutine[Any, Any, V]]) -> V:
        this_read = _Read()
        self._in_flight.setdefault(key, []).append(this_read)
        try:
            value = await read()
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]
            reads = self._in_flight[key]
            reads.remove(this_read)
            if not reads:
                del self._in_flight[key]
        if not this_read.overtaken:
            self._keep(key, value)
        return value

    def _keep(self, key: K, value: V) -> None:
        self._values.pop(key, None)  # the most recently used last
        self._values[key] = value
        if self._ttl_s is not None:
            now = self._clock()
            self._kept_at[key] = now
            self._kept_at.move_to_end(key)  # the latest kept last
            self._sweep(now - self._ttl_s)
        if self._max_size is not None and len(self._values) > self._max_size:
            self._forget(next(iter(self._values)))

    def _sweep(self, kept_before: float) -> None:
        """Drop a few of the values kept at ``kept_before`` or earlier (expired), the oldest
        first."""
        for _ in range(EXPIRED_SWEPT_PER_KEEP):
            oldest = next(iter(self._kept_at.items()), None)
            if oldest is None or oldest[1] > kept_before:
                return
            self._forget(oldest[0])

    def put(self, key: K, value: V) -> None:
        """The value just written."""
        self._changed(key)
        self._keep(key, value)

    def update(self, key: K, change: Callable[[V], V]) -> None:
        """Apply a write to the kept value, if there is one."""
        self._changed(key)
        if key in self._values:
            self._values[key] = change(self._values[key])

    def drop(self, key: K) -> None:
        """Read the key again next time."""
        self._changed(key)
        self._forget(key)

    def drop_where(self, matches: Callable[[K], bool]) -> None:
        """Read every key that ``matches`` again next time (and any such key being read now)."""
        for key in [key for key in self._values if matches(key)]:
            self._forget(key)
        for key in [key for key in self._in_flight if matches(key)]:
            self._changed(key)

    def _changed(self, key: K) -> None:
        for read in self._in_flight.get(key, ()):
            read.overtaken = True
        self._reading.pop(key, None)  # who asks from now on reads after the change


class _Read:
    """One read in flight; ``overtaken``: its key changed since it began."""

    __slots__ = ("overtaken",)

    def __init__(self) -> None:
        self.overtaken = False


class ExpiringKeys(Generic[K]):
    """Keys held for ``ttl_s`` seconds after they were last added, at most ``capacity`` of
    them (the oldest go first): what was lately true, without asking again."""

    def __init__(self, ttl_s: float, capacity: int | None = None) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._expiries: OrderedDict[K, float] = OrderedDict()  # insertion order: expiry order

    def __len__(self) -> int:
        return len(self._expiries)

    def add(self, key: K, now: float) -> None:
        self._drop_expired(now)
        self._expiries.pop(key, None)
        self._expiries[key] = now + self._ttl_s
        while self._capacity is not None and len(self._expiries) > self._capacity:
            self._expiries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._expiries.pop(key, None)

    def holds(self, key: K, now: float) -> bool:
        self._drop_expired(now)
        return key in self._expiries

    def _drop_expired(self, now: float) -> None:
        while self._expiries and next(iter(self._expiries.values())) <= now:
            self._expiries.popitem(last=False)
