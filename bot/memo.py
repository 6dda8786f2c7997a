"""Rows read from SQLite kept in memory, for what is read before an interaction is acknowledged
(pure: no discord, no torch, no SQL; the caller passes the read).

This process is the only writer of what it caches (guild settings, member settings, the quota
ledger), and every writer tells the memo: it stores the new value (write-through), updates it
or drops it. A read that overlapped a change of its key is returned but not kept, since it
may predate the change. Callers that miss the same key at once share one read (a burst of
commands from one member, or the first ones of a guild, reads once).

A memo given ``ttl_s`` serves reads no writer tells it of: a value is read again once that
old, and is that stale at most.

``ExpiringKeys`` keeps what was lately true (Discord's answers, events heard) for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable, Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Members whose quota limits, spending and settings are kept, those who asked last; another
# member's are read again. Measured at this size: spending 9.1 MiB, limits 13.9 MiB (ten roles
# a member), settings 2.0 MiB.
MEMBERS_KEPT = 10_000
# Members known at most to have no row (no spending lately, no saved settings: read ahead at the
# start); past it, each one's first check reads as before. Measured at this size: those who
# spent 15.5 MiB (99,744 of them, 18-digit ids, tracemalloc), those who saved settings 7.4 MiB.
MEMBERS_READ_AHEAD = 100_000
# Rows a read-ahead query reads at most: a member's read sent meanwhile waits on one such query
# (aiosqlite's one thread a connection), and the loop adds one such page at a time.
READ_AHEAD_PAGE = 1_000


class ReadAhead(Generic[K]):
    """The keys a read at the start found (``read``), joined by each one written since
    (``add``): once read, a key not among them has no row, known without a read. Past
    ``MEMBERS_READ_AHEAD`` keys it is given up, and nothing is known."""

    def __init__(self) -> None:
        self._keys: set[K] | None = set()
        self.complete = False

    def add(self, keys: Iterable[K]) -> None:
        if self._keys is not None:
            self._keys.update(keys)
            if len(self._keys) > MEMBERS_READ_AHEAD:
                self._keys = None

    async def read(self, pages: AsyncIterable[Iterable[K]]) -> None:
        """Join the keys of ``pages`` (united, not replaced: a key written during the read is
        in already), the rest left unread once given up."""
        async for page in pages:
            self.add(page)
            if self._keys is None:
                break
        self.complete = True

    def lacks(self, key: K) -> bool:
        """Whether ``key`` is known to have no row."""
        return self.complete and self._keys is not None and key not in self._keys


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
        self._kept_at: dict[K, float] = {}  # with ``ttl_s`` only
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
            self._kept_at[key] = self._clock()
        if self._max_size is not None and len(self._values) > self._max_size:
            self._forget(next(iter(self._values)))

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
