"""/history's page turns read from the edge of the page shown (keyset), not past every job
before the page: each page turned to, forwards and back, is the page read by its number (ties
in time included, searched or not); a turn whose edge job was erased since reads by number;
jobs made while pages are open move the pages' numbers (each page numbered by the jobs before
it), never hide the newest nor show a job twice; and a page button's custom id carries it all
within Discord's 100 characters, while a button posted before (a page number alone) still
turns. On a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.history import PAGE_SIZE, History, HistoryPage, PageAnchor
from bot.policy.member_settings import MemberSettings
from cogs.history import HistoryPageButton, pager
from cogs.lists import MAX_SEARCH_CHARS
from db import history as store
from db import jobs as journal

MEMBER, OTHER, GUILD = 1, 2, 10
JOBS = 4 * PAGE_SIZE + 2  # five pages, the last of two


@pytest.fixture
async def history(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    """The member's ``JOBS`` jobs in ``GUILD``, three at each time (ties broken by id), a job
    of theirs in direct messages and another member's between them."""
    for index in range(JOBS):
        prompt = f"{'a cat' if index % 2 else 'a dog'} {index}"
        job_id = f"{0xABC000 + index * 7919 % 1000:016x}"  # ids out of time order
        request = json.dumps({"prompt": prompt})
        new = journal.NewJob(job_id, "imagine", MEMBER, GUILD, 20, request, index // 3)
        await journal.insert_job(conn, new)
    for user_id, guild_id in ((MEMBER, None), (OTHER, GUILD)):
        other = journal.NewJob(f"{user_id:016x}", "imagine", user_id, guild_id, None, "{}", 2.0)
        await journal.insert_job(conn, other)
    return History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))


def ids(page: HistoryPage) -> list[str]:
    return [line.job_id for line in page.lines]


@pytest.mark.parametrize("search", [None, "cat"])
async def test_pages_turned_to_are_the_pages_by_number_both_ways(
    history: History, search: str | None
) -> None:
    by_number = [await history.page(MEMBER, number, search, guild_id=GUILD) for number in range(5)]
    count = by_number[0].page_count
    assert count == (5 if search is None else 3)
    shown = by_number[0]
    for number in range(1, count):  # ▶ from each page
        edge = PageAnchor(shown.lines[-1].job_id, older=True)
        shown = await history.page(MEMBER, number, search, guild_id=GUILD, next_to=edge)
        assert (shown.page, ids(shown)) == (number, ids(by_number[number]))
    for number in reversed(range(count - 1)):  # ◀ back from the last
        edge = PageAnchor(shown.lines[0].job_id, older=False)
        shown = await history.page(MEMBER, number, search, guild_id=GUILD, next_to=edge)
        assert (shown.page, ids(shown)) == (number, ids(by_number[number]))


async def test_a_turn_whose_edge_job_was_erased_reads_by_number(
    history: History, conn: aiosqlite.Connection
) -> None:
    second = await history.page(MEMBER, 1, guild_id=GUILD)
    gone = PageAnchor(second.lines[-1].job_id, older=True)
    await conn.execute("DELETE FROM jobs WHERE id = ?", (gone.job_id,))
    turned = await history.page(MEMBER, 2, guild_id=GUILD, next_to=gone)
    assert (turned.page, ids(turned)) == (2, ids(await history.page(MEMBER, 2, guild_id=GUILD)))
    second = await history.page(MEMBER, 1, guild_id=GUILD)
    # Another member's job is no anchor for this one's pages.
    foreign = PageAnchor(f"{OTHER:016x}", older=True)
    assert ids(await history.page(MEMBER, 1, guild_id=GUILD, next_to=foreign)) == ids(second)
    # Their own job in direct messages only places the turn: every job shown is of this server.
    elsewhere = PageAnchor(f"{MEMBER:016x}", older=True)
    here = {
        line.job_id
        for number in range(5)
        for line in (await history.page(MEMBER, number, guild_id=GUILD)).lines
    }
    turned = await history.page(MEMBER, 1, guild_id=GUILD, next_to=elsewhere)
    assert turned.lines and set(ids(turned)) <= here


def parsed(custom_id: str) -> Any:
    return HistoryPageButton(0, "", "x", None).template.fullmatch(custom_id)


async def test_page_buttons_carry_their_turn_within_discords_limit(history: History) -> None:
    search = "é" * MAX_SEARCH_CHARS
    page = await history.page(MEMBER, 2, guild_id=GUILD)
    view = pager(page, search)
    assert view is not None
    previous, following = (
        item.item for item in view.children if isinstance(item, HistoryPageButton)
    )
    for button, edge, older in ((previous, 0, False), (following, -1, True)):
        assert button.custom_id is not None and len(button.custom_id) <= 100
        turned = await HistoryPageButton.from_custom_id(None, button, parsed(button.custom_id))  # type: ignore[arg-type]
        assert turned.search == search
        assert turned.anchor == PageAnchor(page.lines[edge].job_id, older)
    # Posted before the page turns carried their edge: turned by number.
    before = parsed("easel:history:3:cat")
    old = await HistoryPageButton.from_custom_id(None, following, before)  # type: ignore[arg-type]
    assert (old.page, old.search, old.anchor) == (3, "cat", None)


def turns(page: HistoryPage) -> tuple[HistoryPageButton, HistoryPageButton]:
    """The page's ◀ and ▶, as the member sees them."""
    view = pager(page, None)
    assert view is not None
    previous, following = (item for item in view.children if isinstance(item, HistoryPageButton))
    return previous, following


async def clicked(history: History, button: HistoryPageButton) -> HistoryPage:
    return await history.page(MEMBER, button.page, guild_id=GUILD, next_to=button.anchor)


@pytest.mark.parametrize("made_since", [3, PAGE_SIZE])
async def test_jobs_made_while_pages_are_open_move_their_numbers_not_hide_jobs(
    history: History, conn: aiosqlite.Connection, made_since: int
) -> None:
    """The member makes jobs while their second page is shown: turning on from it shows each
    older job once and stops at the last; turning back ends on the newest jobs; and every
    page's number and ◀ ▶ agree with where its jobs stand."""
    shown = await clicked(history, turns(await history.page(MEMBER, 0, guild_id=GUILD))[1])
    for index in range(made_since):
        new = journal.NewJob(f"{0xF00 + index:016x}", "imagine", MEMBER, GUILD, 20, "{}", 100)
        await journal.insert_job(conn, new)
    everything = await history.page(MEMBER, 0, guild_id=GUILD)
    every_job = await store.page_of_jobs(
        conn, MEMBER, guild_id=GUILD, search=None, limit=everything.total, offset=0
    )
    order = [entry.job_id for entry in every_job]

    def numbered_where_it_stands(page: HistoryPage) -> None:
        first = order.index(page.lines[0].job_id)
        assert ids(page) == order[first : first + PAGE_SIZE]
        assert page.page == -(-first // PAGE_SIZE)  # ◀ off only on the newest jobs
        assert page.page_count - page.page == -(-(len(order) - first) // PAGE_SIZE)

    seen = ids(shown)
    while not turns(shown)[1].item.disabled:  # ▶ to the last page
        shown = await clicked(history, turns(shown)[1])
        numbered_where_it_stands(shown)
        seen += ids(shown)
        assert len(seen) <= len(order)  # ends: no page shown again
    assert seen == order[order.index(seen[0]) :]  # each older job once, up to the oldest
    while not turns(shown)[0].item.disabled:  # ◀ to the first page
        number = shown.page
        shown = await clicked(history, turns(shown)[0])
        numbered_where_it_stands(shown)
        assert shown.page == number - 1
    assert (shown.page, ids(shown)) == (0, ids(everything))
