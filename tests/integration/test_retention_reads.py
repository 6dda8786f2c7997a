"""A retention round reads only what it can prune: after the first round of a process (which
lists every stored file, for files of no job), a round reads the files of the jobs it deletes
by their rows and the ``job_inputs`` index, and lists no folder. What a kept job reads stays
until that job goes too. The real queue on a real SQLite file, real files, a set clock."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiosqlite
import pytest

from bot.history import History
from bot.jobs import retention, stored_files
from bot.jobs.retention import Pruned, Retention
from bot.policy.member_settings import MemberSettings
from db import jobs as journal
from tests.integration.test_stored_data import DAY, NOW, Data, submission, written_at

OTHER_MEMBER = 8  # not test_stored_data's MEMBER


def pruned_files(pruned: Pruned) -> tuple[int, int, int]:
    return pruned.jobs, pruned.pictures, pruned.uploads


async def test_a_later_round_reads_only_the_pruned_jobs_files(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Data(conn, tmp_path / "data", now=NOW - 60 * DAY)  # the queue's clock never goes back
    queue = data.queue()
    await queue.start()
    clock = [NOW - 60 * DAY]
    kept_30_days = Retention(conn, data.images, data.inputs, 30, clock=lambda: clock[0])
    assert await kept_30_days.prune() == Pruned()  # the first round lists every stored file
    original = await data.finished_job(queue, NOW - 40 * DAY)
    [picture] = data.sink.delivered[-1].images
    # A variation of the original's picture, made later, and a job sharing its upload.
    data.now = NOW - 20 * DAY
    made = len(data.sink.delivered)
    variation = await queue.submit(
        dataclasses.replace(
            submission(at=data.now),
            request=dataclasses.replace(submission(at=0).request, init_image=str(picture.path)),
        )
    )
    shared = data.upload("shared")
    sharers = [await queue.submit(submission(at=data.now, upload=shared)) for _ in range(2)]
    await data.sink.wait_for(made + 3)
    await queue.stop()
    written_at(data.root, NOW - 50 * DAY)

    def listed(*_args: object) -> None:
        raise AssertionError("a later round listed every stored file")

    monkeypatch.setattr(stored_files.ResultFolders, "__init__", listed)
    monkeypatch.setattr(retention, "remove_unused_uploads", listed)
    monkeypatch.setattr(journal, "input_picture_paths", listed)

    clock[0] = NOW
    # The original goes, with its upload; its picture stays: the variation reads it.
    assert pruned_files(await kept_30_days.prune()) == (1, 0, 1)
    assert await journal.get_job(conn, original) is None
    assert picture.path.is_file()
    clock[0] = NOW + 15 * DAY
    # The variation and the sharers go: their pictures, the original's picture no job reads
    # now, and the upload both sharers read, once.
    assert pruned_files(await kept_30_days.prune()) == (3, 4, 1)
    for job_id in (original, variation, *sharers):
        assert not (data.images / job_id).exists()
    assert not shared.exists() and list(data.inputs.iterdir()) == []
    assert list(data.images.iterdir()) == []


async def test_files_a_round_failed_to_delete_are_found_by_the_next_rounds_sweep(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Data(conn, tmp_path / "data", now=NOW - 60 * DAY)
    queue = data.queue()
    await queue.start()
    clock = [NOW - 60 * DAY]
    kept_30_days = Retention(conn, data.images, data.inputs, 30, clock=lambda: clock[0])
    await kept_30_days.prune()  # the first round's sweep
    old = await data.finished_job(queue, NOW - 40 * DAY)
    await queue.stop()
    written_at(data.root, NOW - 40 * DAY)

    def disk_error(*_args: object) -> int:
        raise OSError("disk error")

    clock[0] = NOW
    with monkeypatch.context() as failing:
        failing.setattr(retention, "remove_result_folders", disk_error)
        with pytest.raises(OSError, match="disk error"):
            await kept_30_days.prune()
    assert await journal.get_job(conn, old) is None and (data.images / old).is_dir()
    # Its row is gone, so only a listing finds its files: the next round sweeps.
    assert pruned_files(await kept_30_days.prune()) == (0, 1, 1)
    assert not (data.images / old).exists() and list(data.inputs.iterdir()) == []


async def test_a_kept_folder_goes_with_the_forget_me_of_the_last_job_reading_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A pruned result's folder kept for another member's variation goes once that variation
    is erased: no retention round would name it again until a restart."""
    data = Data(conn, tmp_path / "data", now=NOW - 60 * DAY)
    queue = data.queue()
    await queue.start()
    clock = [NOW - 60 * DAY]
    kept_30_days = Retention(conn, data.images, data.inputs, 30, clock=lambda: clock[0])
    await kept_30_days.prune()  # the first round's sweep
    original = await data.finished_job(queue, NOW - 40 * DAY)
    [picture] = data.sink.delivered[-1].images
    data.now = NOW - 20 * DAY
    made = len(data.sink.delivered)
    await queue.submit(
        dataclasses.replace(
            submission(at=data.now, user_id=OTHER_MEMBER),
            request=dataclasses.replace(submission(at=0).request, init_image=str(picture.path)),
        )
    )
    await data.sink.wait_for(made + 1)
    await queue.stop()
    written_at(data.root, NOW - 50 * DAY)
    clock[0] = NOW
    await kept_30_days.prune()
    assert await journal.get_job(conn, original) is None and picture.path.is_file()

    history = History(conn, data.images, data.inputs, MemberSettings(conn), clock=lambda: NOW)
    forgotten = await history.forget(OTHER_MEMBER)
    assert forgotten.jobs == 1
    assert not (data.images / original).exists()
    assert list(data.images.iterdir()) == []


async def test_a_pruned_jobs_folder_no_picture_row_names_goes_with_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Pictures left in a job's folder without their rows (their record refused, a crash's)
    go when the job is pruned, not at the next start."""
    data = Data(conn, tmp_path / "data", now=NOW - 60 * DAY)
    queue = data.queue()
    await queue.start()
    clock = [NOW - 60 * DAY]
    kept_30_days = Retention(conn, data.images, data.inputs, 30, clock=lambda: clock[0])
    await kept_30_days.prune()  # the first round's sweep
    old = await data.finished_job(queue, NOW - 40 * DAY)
    await queue.stop()
    await conn.execute("DELETE FROM images WHERE job_id = ?", (old,))
    await conn.commit()
    written_at(data.root, NOW - 40 * DAY)
    clock[0] = NOW
    assert pruned_files(await kept_30_days.prune()) == (1, 1, 1)
    assert not (data.images / old).exists()
