"""bot.memo: what is kept, what is read again, and what concurrent misses share."""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
import weakref
from collections.abc import AsyncIterator

import pytest

from bot import memo as memo_module
from bot.memo import Memo, ReadAhead


class Store:
    """A table of one value per key whose reads can be held open."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.reads = 0
        self.reading = asyncio.Event()  # a read has begun
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self, key: str) -> int:
        self.reads += 1
        value = self.rows.get(key, 0)  # read at once, returned when the gate opens
        self.reading.set()
        await self.gate.wait()
        return value

    async def began(self) -> None:
        await self.reading.wait()
        self.reading.clear()


async def test_a_value_is_read_once_and_a_write_is_seen_at_once() -> None:
    store, memo = Store(), Memo[str, int]()
    assert await memo.get("a", lambda: store.read("a")) == 0
    assert await memo.get("a", lambda: store.read("a")) == 0
    assert store.reads == 1
    store.rows["a"] = 5
    memo.put("a", 5)
    assert await memo.get("a", lambda: store.read("a")) == 5
    memo.update("a", lambda value: value + 1)
    assert await memo.get("a", lambda: store.read("a")) == 6
    memo.drop("a")
    assert await memo.get("a", lambda: store.read("a")) == 5
    assert store.reads == 2


async def test_a_read_that_overlapped_a_change_is_not_kept() -> None:
    store, memo = Store(), Memo[str, int]()
    store.gate.clear()
    stale = asyncio.create_task(memo.get("a", lambda: store.read("a")))
    await store.began()  # the read has seen 0
    store.rows["a"] = 7
    memo.drop("a")
    store.gate.set()
    assert await stale == 0  # its caller came before the change
    assert await memo.get("a", lambda: store.read("a")) == 7


async def test_a_read_that_overlapped_a_change_of_many_keys_is_not_kept() -> None:
    store, memo = Store(), Memo[str, int]()
    store.gate.clear()
    stale = asyncio.create_task(memo.get("a", lambda: store.read("a")))
    await store.began()
    store.rows["a"] = 7
    memo.drop_where(lambda key: key.startswith("a"))
    store.gate.set()
    await stale
    assert await memo.get("a", lambda: store.read("a")) == 7


async def test_concurrent_misses_share_one_read_until_a_change() -> None:
    store, memo = Store(), Memo[str, int]()
    store.gate.clear()
    first = [asyncio.create_task(memo.get("a", lambda: store.read("a"))) for _ in range(5)]
    await store.began()
    await asyncio.sleep(0)  # the other four have asked too
    assert store.reads == 1
    store.rows["a"] = 3
    memo.drop("a")
    # Asked after the change: not handed the read that began before it.
    later = asyncio.create_task(memo.get("a", lambda: store.read("a")))
    await store.began()
    store.gate.set()
    assert await asyncio.gather(*first) == [0] * 5
    assert await later == 3
    assert store.reads == 2


async def test_a_failed_read_is_not_kept() -> None:
    memo = Memo[str, int]()

    async def broken() -> int:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        await memo.get("a", broken)

    async def fine() -> int:
        return 4

    assert await memo.get("a", fine) == 4


async def test_a_bounded_memo_keeps_the_values_last_used() -> None:
    store, memo = Store(), Memo[str, int](max_size=2)
    for key in ("a", "b", "a", "c"):  # "a" used again before "c" comes: "b" goes
        await memo.get(key, functools.partial(store.read, key))
    assert store.reads == 3
    await memo.get("a", lambda: store.read("a"))
    await memo.get("c", lambda: store.read("c"))
    assert store.reads == 3
    await memo.get("b", lambda: store.read("b"))
    assert store.reads == 4


async def test_kept_peeks_without_reading_and_counts_as_a_use() -> None:
    store, memo = Store(), Memo[str, int](max_size=2)
    assert memo.kept("a") is None
    assert store.reads == 0
    for key in ("a", "b"):
        await memo.get(key, functools.partial(store.read, key))
    assert memo.kept("a") == 0  # "a" used after "b": "b" goes when "c" comes
    await memo.get("c", lambda: store.read("c"))
    assert memo.kept("a") == 0
    assert memo.kept("b") is None
    assert store.reads == 3


async def test_changes_of_many_keys_leave_nothing_behind() -> None:
    # One entry per key ever changed would grow with membership: a change is remembered
    # only while a read that began before it is in flight.
    store, memo = Store(), Memo[int, int](max_size=10)
    await memo.get(0, lambda: store.read("0"))
    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for key in range(20_000):
            memo.put(key, key)
            memo.update(key + 1, lambda value: value + 1)
            memo.drop(key + 2)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes kept after changes of 20,000 keys"
    assert [memo.kept(key) for key in range(19_990, 20_000)] == list(range(19_990, 20_000))


async def test_a_key_let_go_for_room_is_read_again_with_what_changed_since() -> None:
    store, memo = Store(), Memo[str, int](max_size=2)
    assert await memo.get("a", lambda: store.read("a")) == 0
    for key in ("b", "c"):  # "a" goes
        await memo.get(key, functools.partial(store.read, key))
    store.rows["a"] = 9
    memo.update("a", lambda value: value + 9)  # nothing kept to update
    assert memo.kept("a") is None
    assert await memo.get("a", lambda: store.read("a")) == 9
    assert store.reads == 4
    # A read of a let-go key that a change overtakes is still not kept.
    for key in ("b", "c"):
        await memo.get(key, functools.partial(store.read, key))
    store.gate.clear()
    store.reading.clear()  # set by the reads above
    stale = asyncio.create_task(memo.get("a", lambda: store.read("a")))
    await store.began()
    store.rows["a"] = 10
    memo.update("a", lambda value: value + 1)
    store.gate.set()
    assert await stale == 9
    assert await memo.get("a", lambda: store.read("a")) == 10


async def test_a_value_kept_with_a_lifetime_is_read_again_once_that_old() -> None:
    """``ttl_s``: for reads no writer tells of, a value serves that long, no longer."""
    clock = [100.0]
    store, memo = Store(), Memo[str, int](ttl_s=30.0, clock=lambda: clock[0])
    assert await memo.get("a", lambda: store.read("a")) == 0
    store.rows["a"] = 5  # written without telling the memo
    clock[0] = 129.9
    assert await memo.get("a", lambda: store.read("a")) == 0
    assert memo.kept("a") == 0
    assert store.reads == 1
    clock[0] = 130.0
    assert memo.kept("a") is None
    assert await memo.get("a", lambda: store.read("a")) == 5
    assert store.reads == 2


def read_rows(*pages: list[tuple[str, float]]) -> AsyncIterator[list[tuple[str, float]]]:
    async def rows() -> AsyncIterator[list[tuple[str, float]]]:
        for page in pages:
            yield page

    return rows()


async def test_a_read_ahead_knows_who_lacks_rows_since_a_time_once_read() -> None:
    ahead = ReadAhead[str]()
    assert not ahead.lacks("nobody")  # not read yet: nothing is known
    await ahead.read(read_rows([("a", 10.0)], [("b", 20.0)]), since=5.0)
    assert ahead.lacks("nobody", 5.0)
    assert not ahead.lacks("a", 5.0) and not ahead.lacks("a", 10.0)
    assert ahead.lacks("a", 10.5) and not ahead.lacks("b", 10.5)
    assert not ahead.lacks("nobody", 4.0) and not ahead.lacks("nobody")  # not all was read


async def test_a_row_written_during_the_read_outlasts_an_older_one_the_read_returns() -> None:
    """A page read before a write joins the set after it: the write's later time is kept,
    so once a period begins between the two its writer is still known to have a row."""
    ahead = ReadAhead[str]()

    async def rows_read_before_a_write() -> AsyncIterator[list[tuple[str, float]]]:
        page = [("a", 10.0)]  # as read from SQLite
        ahead.add([("a", 30.0)])  # the write-through of a row written meanwhile
        yield page

    await ahead.read(rows_read_before_a_write(), since=5.0)
    assert not ahead.lacks("a", 20.0)


async def test_keys_older_than_a_new_period_are_let_go_and_make_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``forget_before``: a key whose rows are all older lacks rows since then, kept or not;
    gone, it leaves room below ``MEMBERS_READ_AHEAD`` for those who write since."""
    monkeypatch.setattr(memo_module, "MEMBERS_READ_AHEAD", 2)
    ahead = ReadAhead[str]()
    await ahead.read(read_rows([("a", 10.0), ("b", 20.0)]), since=5.0)
    ahead.forget_before(15.0)
    assert ahead.lacks("a", 15.0) and not ahead.lacks("b", 15.0)
    assert not ahead.lacks("a", 12.0)  # before what is kept now: not known
    ahead.add([("c", 25.0)])  # three keys ever, two kept: not given up
    assert ahead.lacks("nobody", 15.0) and not ahead.lacks("c", 15.0)
    ahead.add([("d", 26.0)])  # three kept: given up, nothing known
    assert not ahead.lacks("nobody", 15.0)


class Kept:
    """A value whose release can be seen (``weakref``)."""


async def test_values_past_their_lifetime_go_as_others_are_kept_asked_again_or_not() -> None:
    """``ttl_s``: a value no one asks again (yesterday's key) goes as the memo keeps others,
    the oldest kept first (one kept again counts from then), so memory follows the values
    alive, not every key read since the start (review: no sweep)."""
    clock = [0.0]
    memo = Memo[int, Kept](ttl_s=30.0, clock=lambda: clock[0])
    values = [Kept() for _ in range(100)]
    released = [weakref.ref(value) for value in values]
    for key, value in enumerate(values):
        memo.put(key, value)
    clock[0] = 20.0
    memo.put(0, values[0])  # kept again: alive until 50
    del values, value
    clock[0] = 30.0
    for key in range(100, 150):  # fewer keeps than values expired: each drops a few
        memo.put(key, Kept())
    assert [key for key, value in enumerate(released) if value() is not None] == [0]
    assert memo.kept(0) is not None and memo.kept(149) is not None


async def test_a_read_ahead_given_up_starts_over_once_and_is_trusted_once_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``start_over``: given up, once a new ``forget_before`` let keys go, a read again is
    trusted once it ends, keys written meanwhile included; nothing is known before."""
    monkeypatch.setattr(memo_module, "MEMBERS_READ_AHEAD", 2)
    ahead = ReadAhead[str]()
    assert not ahead.start_over()  # the first read is still to come
    await ahead.read(read_rows([("a", 10.0), ("b", 11.0)], [("c", 12.0)]), since=5.0)
    assert not ahead.lacks("nobody", 5.0)  # given up
    assert not ahead.forget_before(5.0)  # not a new time: nothing to start over for
    assert ahead.forget_before(20.0) and ahead.start_over()
    assert not ahead.start_over()  # once: its read is to come
    ahead.add([("d", 21.0)])  # written before the read ends
    assert not ahead.lacks("nobody", 20.0)  # not trusted until the read ends
    await ahead.read(read_rows([("e", 22.0)]), since=20.0)
    assert ahead.lacks("nobody", 20.0)
    assert not ahead.lacks("d", 20.0) and not ahead.lacks("e", 20.0)
    assert ahead.forget_before(30.0) and not ahead.start_over()  # not given up


async def test_a_read_ahead_given_up_while_its_read_runs_does_not_start_over_under_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes past the bound give up a set whose read still runs, and a new period begins
    before its next page: no start over then (it would empty what the read had found, and
    that read's end would trust a set without those keys), nor a second read beside it."""
    monkeypatch.setattr(memo_module, "MEMBERS_READ_AHEAD", 3)
    ahead = ReadAhead[str]()
    await ahead.read(read_rows([("p", 1.0), ("q", 2.0), ("r", 3.0), ("s", 4.0)]), since=0.0)
    assert ahead.forget_before(10.0) and ahead.start_over()  # given up at the start
    next_page = asyncio.Event()

    async def pages() -> AsyncIterator[list[tuple[str, float]]]:
        yield [("a", 22.0)]
        await next_page.wait()
        yield [("b", 21.0)]

    reading = asyncio.create_task(ahead.read(pages(), since=10.0))
    await asyncio.sleep(0)
    ahead.add([("x", 13.0), ("y", 14.0), ("z", 15.0)])  # past the bound mid-read
    assert ahead.forget_before(20.0) and not ahead.start_over()
    next_page.set()
    await reading
    assert not ahead.lacks("a", 20.0)


async def test_a_read_ahead_whose_read_failed_is_given_up_until_it_starts_over() -> None:
    ahead = ReadAhead[str]()

    async def failing() -> AsyncIterator[list[tuple[str, float]]]:
        yield [("a", 10.0)]
        raise OSError("disk I/O error")

    with pytest.raises(OSError):
        await ahead.read(failing(), since=5.0)
    assert not ahead.lacks("nobody", 5.0)
    assert ahead.forget_before(20.0) and ahead.start_over()
    await ahead.read(read_rows([("b", 21.0)]), since=20.0)
    assert ahead.lacks("nobody", 20.0) and not ahead.lacks("b", 20.0)
