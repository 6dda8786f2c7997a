"""The dashboard gallery of channels holding more of a server's jobs than are read whole: its
page comes from a window of the server's newest shown jobs when that holds a full page, else
from each chosen channel's newest jobs. Small thresholds, real SQLite; the statements run are
counted so that each test is known to take its branch."""

from __future__ import annotations

import aiosqlite
import pytest

from db import dashboard
from db import jobs as journal
from inference.types import RenderRequest

GUILD, FIRST, SECOND, ELSEWHERE = 5, 51, 52, 53
CHOSEN = [FIRST, SECOND]
PAGE = 5


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pictures each of the gallery's page reads returned, in order."""
    monkeypatch.setattr(dashboard, "_GALLERY_SORTED_WHOLE", 4)
    returned: list[int] = []
    read = dashboard._gallery

    async def counted(
        conn: aiosqlite.Connection, sql: str, parameters: dict[str, object]
    ) -> list[dashboard.GalleryPicture]:
        pictures = await read(conn, sql, parameters)
        returned.append(len(pictures))
        return pictures

    monkeypatch.setattr(dashboard, "_gallery", counted)
    return returned


async def done_job(
    conn: aiosqlite.Connection,
    job_id: str,
    channel: int,
    finished_at: float,
    pictures: int = 1,
    *,
    private: bool = False,
) -> None:
    request = RenderRequest(f"prompt of {job_id}", seed=1, steps=2).to_json()
    job = journal.NewJob(job_id, "imagine", 7, GUILD, channel, request, 0.0, private=private)
    await journal.insert_job(conn, job)
    images = [
        journal.ImageRecord(job_id, idx, 1, f"/images/{job_id}/{idx}.png", "", 8, 8)
        for idx in range(pictures)
    ]
    await journal.mark_done(conn, job_id, images, 0.1, finished_at)


async def page(conn: aiosqlite.Connection) -> list[tuple[str, int, str]]:
    pictures = await dashboard.recent_pictures(conn, GUILD, CHOSEN, PAGE)
    return [(picture.job_id, picture.idx, picture.prompt) for picture in pictures]


def pictures_of(job_id: str, *indexes: int) -> list[tuple[str, int, str]]:
    return [(job_id, idx, f"prompt of {job_id}") for idx in indexes]


async def test_a_page_the_servers_newest_hold_is_read_from_them_in_order(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch, reads: list[int]
) -> None:
    """Newest first; of two jobs that ended at once, the later journaled first; a job's
    pictures in their order; neither another channel's nor a private job's."""
    monkeypatch.setattr(dashboard, "_GALLERY_NEWEST_WINDOW", 6)
    for number in range(1, 6):  # more than are read whole
        await done_job(conn, f"old-{number}", FIRST, float(number))
    await done_job(conn, "elsewhere-a", ELSEWHERE, 100.0)
    await done_job(conn, "first-a", FIRST, 101.0, 2)
    await done_job(conn, "second-a", SECOND, 102.0, 2)
    await done_job(conn, "first-b", FIRST, 102.0)
    await done_job(conn, "first-private", FIRST, 103.0, private=True)
    await done_job(conn, "elsewhere-b", ELSEWHERE, 104.0)

    assert await page(conn) == [
        *pictures_of("first-b", 0),
        *pictures_of("second-a", 0, 1),
        *pictures_of("first-a", 0, 1),
    ]
    assert reads == [PAGE]  # the window's read alone


async def test_a_page_of_older_pictures_is_read_from_each_channels_newest_cut_at_the_limit(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch, reads: list[int]
) -> None:
    """The server's newest are another channel's: each chosen channel's newest jobs with a
    picture (done jobs without one take no place), merged newest first, cut in the middle of
    a job at the page's end."""
    monkeypatch.setattr(dashboard, "_GALLERY_NEWEST_WINDOW", 3)
    await done_job(conn, "first-a", FIRST, 10.0, 2)
    await done_job(conn, "second-a", SECOND, 11.0, 2)
    await done_job(conn, "first-b", FIRST, 12.0, 2)
    await done_job(conn, "first-c", FIRST, 14.0, 2)
    await done_job(conn, "second-b", SECOND, 14.0, 2)
    for number in range(PAGE):
        await done_job(conn, f"second-empty-{number}", SECOND, 15.0 + number, 0)
    await done_job(conn, "first-private", FIRST, 30.0, 2, private=True)
    for number in range(4):
        await done_job(conn, f"elsewhere-{number}", ELSEWHERE, 100.0 + number)

    assert await page(conn) == [
        *pictures_of("second-b", 0, 1),
        *pictures_of("first-c", 0, 1),
        *pictures_of("first-b", 0),
    ]
    assert reads == [0, PAGE]  # the window held none of them
