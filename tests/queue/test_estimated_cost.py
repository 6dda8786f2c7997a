"""The GPU-seconds reserved for a job before it runs (``accounting.estimated_cost``) grow with
its pictures, their size, its steps and its face fixing: under a GPU-seconds limit the
reservation decides whether a job is taken."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from bot.edits import Picture, vary_request
from bot.jobs import accounting
from bot.jobs.accounting import (
    ESTIMATED_SECONDS_PER_STEP_512,
    RenderSize,
    estimated_cost,
    input_picture_size,
)
from bot.jobs.queue import JobQueue, Submission
from inference.face_options import FIX_FACES
from inference.types import RenderRequest
from tests.support.picture_reads import picture_reads_off_the_loop


def seconds(count: int = 1, size: int = 512, steps: int = 20, **options: object) -> float:
    request = RenderRequest(
        "a cat", steps=steps, width=size, height=size, count=count, options=dict(options)
    )
    return estimated_cost(request).gpu_seconds


def test_the_estimate_grows_with_the_pictures_their_pixels_and_steps() -> None:
    one = seconds()  # one 512x512 picture: the constant's own unit
    assert one == pytest.approx(20 * ESTIMATED_SECONDS_PER_STEP_512, abs=0.001)
    assert seconds(steps=40) == pytest.approx(2 * one, abs=0.002)
    assert seconds(count=4) == pytest.approx(4 * one, abs=0.002)
    assert seconds(size=1024) == pytest.approx(4 * one, abs=0.002)


def test_fixing_faces_adds_one_face_pass_to_every_picture() -> None:
    face_pass = seconds(**{FIX_FACES: True}) - seconds()
    assert face_pass > 0
    assert seconds(count=4, **{FIX_FACES: True}) - seconds(count=4) == pytest.approx(
        4 * face_pass, abs=0.004
    )


def test_a_side_the_request_leaves_out_is_its_models_native_side() -> None:
    """An unsized request renders at its model's native size: an SDXL one (1024) costs four
    times an SD1.5 one (512), and what an explicit 1024x1024 costs."""
    unsized = RenderRequest("a cat", steps=20)
    sized = RenderRequest("a cat", steps=20, width=1024, height=1024)
    assert estimated_cost(unsized, RenderSize(native_side=1024)) == estimated_cost(sized)
    assert estimated_cost(unsized, RenderSize(native_side=1024)).gpu_seconds == pytest.approx(
        4 * estimated_cost(unsized, RenderSize(native_side=512)).gpu_seconds, abs=0.001
    )


def test_an_edit_of_a_picture_reserves_at_the_pictures_size(tmp_path: Path) -> None:
    """/vary, an edit or an expand leave the size out: the engine renders at the input
    picture's (``inference.sizes.default_size``), not at the model's native size. The size is
    the one read where the picture was decoded: no file is opened (it need not exist)."""
    picture = tmp_path / "never-written.png"
    base = RenderRequest("a cat", steps=20, model="xl")
    varied = vary_request(base, Picture(picture, 512, 384), "subtle")
    assert (varied.width, varied.height) == (None, None)
    at_its_size = RenderRequest("a cat", steps=varied.steps, width=512, height=384)
    on_sdxl = estimated_cost(
        varied, RenderSize(native_side=1024, input_size=(512, 384))
    ).gpu_seconds
    assert on_sdxl == estimated_cost(at_its_size).gpu_seconds
    # A picture whose size is not known (gone before it was read): the native size.
    at_native = RenderRequest("a cat", steps=varied.steps, width=1024, height=1024)
    assert estimated_cost(varied, RenderSize(native_side=1024)) == estimated_cost(at_native)
    assert input_picture_size(varied) is None


async def restored_estimates(
    conn: aiosqlite.Connection, images: Path, *submissions: Submission
) -> tuple[list[float], list[float]]:
    """The queue's estimates of ``submissions``, submitted in one process, then read back
    from the journal by the next (no render slot: they stay queued)."""
    first = JobQueue(conn, [], images)
    ids = [await first.submit(submission) for submission in submissions]

    def in_order(queue: JobQueue) -> list[float]:
        by_id = {job.job_id: job.est_seconds for job in queue.snapshot().queued}
        return [by_id[job_id] for job_id in ids]

    submitted = in_order(first)
    restarted = JobQueue(conn, [], images)
    await restarted.start()
    try:
        return submitted, in_order(restarted)
    finally:
        await restarted.stop()


async def test_a_restored_job_keeps_its_submits_estimate_from_its_reservation(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps neither a job's model's native side nor its input picture's size:
    a restored job's estimate (its place's ETA) is what its submit reserved, not its request's
    sized at 512 px, and no picture is opened for it."""

    def no_read(path: Path) -> tuple[int, int]:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(accounting, "picture_size", no_read)
    on_sdxl = RenderRequest("a cat", steps=20, model="xl")  # no size: 1024x1024 on SDXL
    varied = vary_request(on_sdxl, Picture(tmp_path / "input.png", 512, 384), "subtle")
    submitted, restored = await restored_estimates(
        conn,
        tmp_path / "images",
        Submission(
            kind="imagine",
            request=on_sdxl,
            user_id=7,
            render_size=RenderSize(native_side=1024),
        ),
        Submission(
            kind="vary",
            request=varied,
            user_id=8,
            render_size=RenderSize(native_side=1024, input_size=(512, 384)),
        ),
    )
    at_1024 = dataclasses.replace(on_sdxl, width=1024, height=1024)
    at_its_size = dataclasses.replace(on_sdxl, width=512, height=384, steps=varied.steps)
    assert submitted == restored
    assert restored == [
        estimated_cost(at_1024).gpu_seconds,
        estimated_cost(at_its_size).gpu_seconds,
    ]
    assert restored[0] > estimated_cost(on_sdxl).gpu_seconds  # 512 px, the side not known


async def test_a_restored_relax_edit_is_estimated_as_at_its_submit_reading_off_the_loop(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relax job reserves nothing: restored, its edit's picture is read (its size, not in
    the journal), off the event loop, so its estimate is its submit's. Its submit read no
    file: the size came with it."""
    picture = tmp_path / "input.png"
    Image.new("RGB", (512, 384)).save(picture)
    base = RenderRequest("a cat", steps=20, model="xl")
    varied = vary_request(base, Picture(picture, 512, 384), "subtle")
    varied = dataclasses.replace(varied, options={**varied.options, "relax": True})
    reads = picture_reads_off_the_loop(monkeypatch)
    edit = Submission(
        kind="vary",
        request=varied,
        user_id=7,
        render_size=RenderSize(native_side=1024, input_size=(512, 384)),
    )
    [submitted], [restored] = await restored_estimates(conn, tmp_path / "images", edit)
    assert reads == [picture]  # at the restart alone
    at_its_size = RenderRequest("a cat", steps=varied.steps, width=512, height=384)
    assert submitted == restored == estimated_cost(at_its_size).gpu_seconds
