"""A full data disk: one warning while it lasts (not a traceback per job), one line when it
ends; and admission refuses new jobs meanwhile, from a reading of the free space taken at
most every few seconds. The real queue on a real SQLite file, an engine that needs no torch,
ENOSPC from the pictures' writes."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission, admission
from bot.jobs.retention import START_ROOM_BYTES
from bot.storage_trouble import STORAGE_FULL
from bot.user_errors import UserError
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue


def submission(user_id: int) -> Submission:
    return Submission(
        "imagine", RenderRequest("a barn", seed=user_id, steps=2), user_id=user_id, guild_id=1
    )


async def test_a_full_disk_is_one_warning_while_it_lasts_and_one_line_once_it_ends(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error_logs: ErrorLogs,
) -> None:
    caplog.set_level(logging.INFO, "bot.jobs.queue")
    full = True
    write_bytes = Path.write_bytes

    def no_room(path: Path, data: bytes) -> int:
        if full and "images" in path.parts:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", no_room)
    engine = InstantEngine()
    data_dir = tmp_path / "data"
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], data_dir / "images"
    )
    try:
        for user in (1, 2, 3):
            await queue.submit(submission(user))
        await sink.wait_for(3)
        full = False
        await queue.submit(submission(4))
        await sink.wait_for(4)
        full = True
        await queue.submit(submission(5))
        await sink.wait_for(5)
    finally:
        await queue.stop()

    assert [job.succeeded for job in sink.delivered] == [False, False, False, True, False]
    said = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith("EASEL_DATA_DIR")
    ]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert f"({data_dir}) is full (" in said[0][1] and "bytes free" in said[0][1]
    assert "has room again" in said[1][1]
    assert error_logs.records == []  # no traceback for any of the jobs


async def test_admission_refuses_while_the_disk_is_full_reading_it_once_in_a_while(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free, reads = START_ROOM_BYTES - 1, []

    def free_bytes(path: Path) -> int:
        reads.append(path)
        return free

    monkeypatch.setattr(admission, "free_bytes", free_bytes)
    monkeypatch.setattr(admission, "ROOM_READ_EVERY_S", 3600.0)
    queue = JobQueue(conn, [], tmp_path / "images")
    for _ in range(3):
        with pytest.raises(UserError) as refused:
            await queue.quota_refusal(submission(1))
        assert str(refused.value) == STORAGE_FULL.told()
    assert reads == [tmp_path / "images"]  # read once for the three

    free = START_ROOM_BYTES
    monkeypatch.setattr(admission, "ROOM_READ_EVERY_S", 0.0)
    assert await queue.quota_refusal(submission(1)) is None
    assert len(reads) == 2


async def test_admission_refusing_for_want_of_room_is_one_warning_and_one_line_once_it_ends(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "bot.jobs.queue")
    readings = iter([START_ROOM_BYTES - 1, 1, START_ROOM_BYTES, START_ROOM_BYTES, 2])
    monkeypatch.setattr(admission, "free_bytes", lambda _path: next(readings))
    monkeypatch.setattr(admission, "ROOM_READ_EVERY_S", 0.0)  # read at each check
    queue = JobQueue(conn, [], tmp_path / "images")
    for room in (False, False, True, True, False):
        if room:
            assert await queue.quota_refusal(submission(1)) is None
        else:
            with pytest.raises(UserError):
                await queue.quota_refusal(submission(1))

    said = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith("EASEL_DATA_DIR")
    ]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert said[0][1] == (
        f"EASEL_DATA_DIR ({tmp_path}) has less free than the 64 MiB a job needs "
        f"({START_ROOM_BYTES - 1} bytes free): new jobs are refused until space is freed"
    )
    assert said[1][1] == f"EASEL_DATA_DIR ({tmp_path}) has room again: new jobs are accepted"
    assert "(2 bytes free)" in said[2][1]
