"""Stored pictures and uploads are named by their path inside the data folder (schema 33):
an older journal's paths, written where the folder was then, are made so by the migration,
and /forget-me deletes each erased job's result folder by its id, whatever its rows say,
counting erased only the pictures it deleted. The real queue, History and SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from bot.history import History
from bot.jobs.queue import Submission
from bot.policy.member_settings import MemberSettings
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.older_databases import database_at
from tests.support.sinks import started_queue

MEMBER, GUILD = 7, 5
JOB, PARENT = "0123456789abcdef", "fedcba9876543210"


async def made_jobs(conn: aiosqlite.Connection, images: Path, count: int) -> list[str]:
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images
    )
    job_ids = [
        await queue.submit(
            Submission(
                kind="imagine",
                request=RenderRequest("a cat", seed=index, steps=2),
                user_id=MEMBER,
                guild_id=GUILD,
                channel_id=9,
            )
        )
        for index in range(count)
    ]
    await sink.wait_for(count)
    await queue.stop()
    return job_ids


async def test_pictures_are_named_by_their_path_inside_the_data_folder(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        [job_id] = await made_jobs(conn, tmp_path / "images", 1)
        rows = await conn.execute_fetchall("SELECT path FROM images")
        assert [row[0] for row in rows] == [f"images/{job_id}/0.png"]
    finally:
        await conn.close()


async def test_a_plain_stored_name_is_read_without_a_look_at_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name Easel writes is plain (``images/<job id>/0.png``): the loop maps it as it is
    written, resolving nothing (a 16-picture job is mapped on every click); a name of any other
    shape is resolved to tell where it leads."""
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        [job_id] = await made_jobs(conn, tmp_path / "images", 1)
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        resolved: list[Path] = []
        resolve = Path.resolve

        def resolve_counted(path: Path, strict: bool = False) -> Path:
            resolved.append(path)
            return resolve(path, strict)

        monkeypatch.setattr(Path, "resolve", resolve_counted)
        job = await history.job(job_id)
        assert job is not None
        assert job.image_paths == [tmp_path / "images" / job_id / "0.png"]
        assert job.image_paths[0].is_file()
        assert resolved == []
        await conn.execute("UPDATE images SET path = 'images/' || job_id || '/./0.png'")
        job = await history.job(job_id)
        assert job is not None
        assert job.image_paths[0].resolve() == tmp_path / "images" / job_id / "0.png"
        assert resolved  # not plain: resolved, and inside
    finally:
        await conn.close()


async def test_a_stored_name_with_a_nul_byte_reads_as_a_missing_picture(tmp_path: Path) -> None:
    """A database tampered with to hold a NUL byte in a picture's name: the job still reads
    (its Delete, Cancel and a moderator's withdrawal work), its picture as a missing file."""
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        [job_id] = await made_jobs(conn, tmp_path / "images", 1)
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        for name in (f"images/{job_id}/0.png\0", f"images/{job_id}/../../x\0"):
            await conn.execute("UPDATE images SET path = ?", (name,))
            job = await history.job(job_id)
            assert job is not None
            assert not job.image_paths[0].exists()
            assert job.image_paths[0].parent == tmp_path / "images"  # not the job's folder
    finally:
        await conn.close()


async def test_forget_me_deletes_each_jobs_folder_whatever_its_rows_name(tmp_path: Path) -> None:
    """A row naming a picture where it is not (a data folder moved before schema 33, in a
    shape the migration did not recognise): the job's folder goes all the same."""
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        await made_jobs(conn, tmp_path / "images", 2)
        await conn.execute("UPDATE images SET path = '/where/the/folder/was/' || job_id || '.png'")
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        forgotten = await history.forget(MEMBER)
        assert (forgotten.jobs, forgotten.pictures) == (2, 2)
        assert not list((tmp_path / "images").rglob("*.png"))
    finally:
        await conn.close()


async def test_forget_me_counts_erased_only_the_pictures_it_deleted(tmp_path: Path) -> None:
    """A row naming a file outside the data folder's images/ (a restored copy beside the
    old one): not Easel's to delete, so the answer does not count it erased."""
    conn = await connect(tmp_path / "easel.sqlite3")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    try:
        job_ids = await made_jobs(conn, tmp_path / "images", 2)
        (outside / "0.png").write_bytes(b"a picture Easel did not store here")
        await conn.execute(
            "UPDATE images SET path = ? WHERE job_id = ?", (str(outside / "0.png"), job_ids[0])
        )
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        forgotten = await history.forget(MEMBER)
        assert (forgotten.jobs, forgotten.pictures) == (2, 1)
        assert (outside / "0.png").is_file()
        assert not list((tmp_path / "images").rglob("*.png"))
    finally:
        await conn.close()


async def test_the_migration_names_older_paths_inside_the_data_folder(tmp_path: Path) -> None:
    """Schema 32's absolute paths (and a relative EASEL_DATA_DIR's, relative to the working
    folder) of pictures, uploads and requests: each keeps its tail from ``images/<job id>/``
    or ``inputs/``; a path of any other shape stays as it was."""
    path = database_at(tmp_path / "easel.sqlite3", 32)
    old = "/srv/old-host/data"
    upload, mask = f"{old}/inputs/{'a' * 32}.png", f"data/inputs/{'b' * 32}.png"
    parent_picture = f"{old}/images/{PARENT}/0.png"
    request = {
        "prompt": "ünïcode stays",
        "mode": "inpaint",
        "init_image": upload,
        "mask_image": mask,
        "options": {
            "controlnet": [{"image": parent_picture, "module": "canny"}, {"image": None}],
            "ipadapter": {"images": ["/home/someone/picture.png", upload]},
        },
    }
    with sqlite3.connect(path, isolation_level=None) as raw:
        for job_id, request_json in ((PARENT, "{}"), (JOB, json.dumps(request))):
            raw.execute(
                "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id,"
                " request_json, created_at) VALUES (?, 'imagine', 'done', ?, ?, 9, ?, 0)",
                (job_id, MEMBER, GUILD, request_json),
            )
        raw.executemany(
            "INSERT INTO images (job_id, idx, seed, path, infotext, width, height)"
            " VALUES (?, ?, 1, ?, '', 64, 64)",
            [
                (PARENT, 0, parent_picture),
                (JOB, 0, f"data/images/{JOB}/0.png"),
                (JOB, 1, f"{old}/pictures/{JOB}/1.png"),  # not Easel's layout: left alone
                (JOB, 2, f"{old}/images/not-a-job-id/2.png"),
                (JOB, 3, f"C:\\Easel\\data\\images\\{JOB}\\3.png"),  # written on Windows
            ],
        )
        raw.execute("INSERT INTO erasures (user_id, asked_at) VALUES (?, 0)", (MEMBER,))
        raw.execute(
            "INSERT INTO erasure_files (user_id, path, upload) VALUES (?, ?, 1)", (MEMBER, upload)
        )
    await (await connect(path)).close()  # the start's migration
    with sqlite3.connect(path) as raw:
        pictures = raw.execute("SELECT path FROM images ORDER BY job_id, idx").fetchall()
        reads = raw.execute("SELECT path FROM job_inputs WHERE job_id = ?", (JOB,)).fetchall()
        stored_request = json.loads(
            raw.execute("SELECT request_json FROM jobs WHERE id = ?", (JOB,)).fetchone()[0]
        )
        erasing = raw.execute("SELECT path FROM erasure_files").fetchall()
    assert [row[0] for row in pictures] == [
        f"images/{JOB}/0.png",
        f"{old}/pictures/{JOB}/1.png",
        f"{old}/images/not-a-job-id/2.png",
        f"images/{JOB}/3.png",
        f"images/{PARENT}/0.png",
    ]
    new_upload, new_mask = f"inputs/{'a' * 32}.png", f"inputs/{'b' * 32}.png"
    assert {row[0] for row in reads} == {
        new_upload,
        new_mask,
        f"images/{PARENT}/0.png",
        "/home/someone/picture.png",
    }
    assert stored_request == {
        **request,
        "init_image": new_upload,
        "mask_image": new_mask,
        "options": {
            "controlnet": [{"image": f"images/{PARENT}/0.png", "module": "canny"}, {"image": None}],
            "ipadapter": {"images": ["/home/someone/picture.png", new_upload]},
        },
    }
    assert erasing == [(new_upload,)]
