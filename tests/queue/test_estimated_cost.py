"""The GPU-seconds reserved for a job before it runs (``accounting.estimated_cost``) grow with
its pictures, their size, its steps and its face fixing: under a GPU-seconds limit the
reservation decides whether a job is taken."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from bot.compare import Axis, parse_axis, plan_comparison
from bot.edits import Picture, upscale_request, vary_request
from bot.jobs import accounting
from bot.jobs.accounting import (
    ESTIMATED_SECONDS_PER_STEP_512,
    RenderSize,
    estimated_cost,
    input_picture_size,
)
from bot.jobs.queue import JobQueue, Submission
from bot.policy.prompt_safety import plan_request
from inference.face_options import FIX_FACES
from inference.prompt_work import CHUNK_ROW_SHARE, PROMPT_WORK_OPTION, PromptWork
from inference.types import RenderRequest
from inference.upscale import creative_tiles
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


def test_a_hires_fix_costs_its_two_passes() -> None:
    """/imagine hires: 20 steps at 512x512, then 20 more at 1024x1024 (the second pass runs
    all its steps, whatever the denoising), what a plain 512 and a plain 1024 cost together."""
    hires = seconds(hires_scale=2.0)
    assert hires == pytest.approx(seconds() + seconds(size=1024), abs=0.002)
    assert seconds(hires_scale=2.0, hires_denoising=0.3) == hires
    assert seconds(hires_scale=2.0, hires_steps=10) == pytest.approx(
        seconds() + seconds(size=1024, steps=10), abs=0.002
    )
    assert seconds(count=4, hires_scale=2.0) == pytest.approx(4 * hires, abs=0.004)


def test_a_comparison_costs_the_sum_of_its_cells() -> None:
    """A /compare's cells each render at their own steps: 16 cells of 10 and 150 steps are
    reserved as the 16 renders, not as 16 at the base request's 10."""
    base = RenderRequest("a cat", seed=1, steps=10, width=512, height=512)
    x = parse_axis(Axis.STEPS, "10,150", "a cat", 150, [])
    y = parse_axis(Axis.SEED, "1,2,3,4,5,6,7,8", "a cat", 150, [])
    comparison = plan_comparison(base, x, y)
    cost = estimated_cost(comparison.request)
    assert cost.images == 16
    cells = sum(estimated_cost(cell).gpu_seconds for cell in comparison.cells)
    assert cost.gpu_seconds == pytest.approx(cells, abs=0.01)
    assert cost.gpu_seconds == pytest.approx(8 * (seconds(steps=10) + seconds(steps=150)), abs=0.01)


def test_a_comparison_across_models_reckons_each_cell_at_its_models_native_side() -> None:
    """A /compare of an SD 1.5 model (512) and an SDXL one (1024), sizes left out: each cell
    costs what the single job on its model costs (the SDXL one four times the other), not
    both at the request's model's side; faces fixed, each cell's face pass at its own side."""
    base = RenderRequest("a cat", seed=1, steps=20, model="sd15", options={FIX_FACES: True})
    x = parse_axis(Axis.MODEL, "sd15,sdxl", "a cat", 150, ["sd15", "sdxl"])
    request = plan_comparison(base, x, None).request
    assert accounting.compared_models(request) == ["sdxl"]
    assert accounting.compared_models(base) == []
    sides = RenderSize(native_side=512, model_sides=(("sdxl", 1024),))
    single = dataclasses.replace(base, count=1)
    on_sd15 = estimated_cost(single, RenderSize(native_side=512)).gpu_seconds
    on_sdxl = estimated_cost(single, RenderSize(native_side=1024)).gpu_seconds
    assert on_sdxl == pytest.approx(4 * on_sd15, abs=0.001)
    assert estimated_cost(request, sides).gpu_seconds == pytest.approx(on_sd15 + on_sdxl, abs=0.002)
    # The other models' sides not known (before this stop): both cells at 512.
    assert estimated_cost(request, RenderSize(native_side=512)).gpu_seconds == pytest.approx(
        2 * on_sd15, abs=0.002
    )


def test_a_face_pass_is_reckoned_at_its_models_native_side() -> None:
    """The engine inpaints each face at its model's native size: fixing faces on SDXL costs
    four times the face pass on SD 1.5, whatever the picture's own size."""
    plain = RenderRequest("a cat", steps=20, width=768, height=768)
    fixed = dataclasses.replace(plain, options={FIX_FACES: True})

    def face_pass(side: int) -> float:
        size = RenderSize(native_side=side)
        return estimated_cost(fixed, size).gpu_seconds - estimated_cost(plain, size).gpu_seconds

    assert face_pass(1024) == pytest.approx(4 * face_pass(512), abs=0.002)


def upscale(mode: str, factor: int, picture: tuple[int, int], native_side: int) -> float:
    request = RenderRequest(
        "a cat",
        steps=20,
        mode="upscale",
        init_image="/never-read.png",
        options={"upscale_factor": factor, "upscale_mode": mode},
    )
    return estimated_cost(request, RenderSize(native_side, picture)).gpu_seconds


def test_a_fast_upscale_renders_nothing_and_costs_little() -> None:
    """A fast upscale only enlarges (no diffusion): far below a render of its picture, growing
    with its output's pixels."""
    fast = upscale("fast", 4, (1024, 1024), native_side=1024)
    render_1024 = seconds(size=1024)
    assert 0 < fast < render_1024 / 4
    assert upscale("fast", 2, (1024, 1024), native_side=1024) == pytest.approx(fast / 4, abs=0.01)


def test_a_creative_upscale_reckons_the_tiles_it_redetails() -> None:
    """A creative upscale re-details its output in native-size tiles with img2img's steps at
    its strength (0.35 of 20: 8): a 2x of a 512 picture on SD 1.5 is 1024x1024, nine tiles of
    384 (three a side, to overlap by 64), so nine 8-step 384x384 renders; a 4x of a 1024 SDXL
    picture re-details 25 tiles."""
    enlarge_2x = upscale("fast", 2, (512, 512), native_side=512)
    creative = upscale("creative", 2, (512, 512), native_side=512)
    assert creative - enlarge_2x == pytest.approx(9 * seconds(size=384, steps=8), abs=0.01)
    tiles, _ = creative_tiles(4096, 4096, 1024)
    assert len(tiles) == 25
    on_sdxl = upscale("creative", 4, (1024, 1024), native_side=1024)
    assert on_sdxl > 5 * seconds(size=1024)  # more than five plain SDXL renders


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


async def restored_relax_job(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    made_from: Callable[[Picture], RenderRequest],
) -> tuple[RenderRequest, float, float]:
    """A relax job ``made_from`` a 512x384 picture, submitted with that size (as where the
    picture was decoded), then restored: its request and its estimates at the submit and after
    the restart, which alone reads the picture, off the event loop."""
    picture = tmp_path / "inputs" / "input.png"  # where the bot keeps uploads
    picture.parent.mkdir()
    Image.new("RGB", (512, 384)).save(picture)
    request = made_from(Picture(picture, 512, 384))
    request = dataclasses.replace(request, options={**request.options, "relax": True})
    reads = picture_reads_off_the_loop(monkeypatch)
    job = Submission(
        kind=kind,
        request=request,
        user_id=7,
        render_size=RenderSize(native_side=1024, input_size=(512, 384)),
    )
    [submitted], [restored] = await restored_estimates(conn, tmp_path / "images", job)
    assert reads == [picture]  # at the restart alone
    return request, submitted, restored


async def test_a_restored_relax_edit_is_estimated_as_at_its_submit_reading_off_the_loop(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relax job reserves nothing: restored, its edit's picture is read (its size, not in
    the journal), off the event loop, so its estimate is its submit's. Its submit read no
    file: the size came with it."""
    base = RenderRequest("a cat", steps=20, model="xl")
    varied, submitted, restored = await restored_relax_job(
        conn, tmp_path, monkeypatch, "vary", lambda picture: vary_request(base, picture, "subtle")
    )
    at_its_size = RenderRequest("a cat", steps=varied.steps, width=512, height=384)
    assert submitted == restored == estimated_cost(at_its_size).gpu_seconds


async def test_a_restored_relax_upscale_is_estimated_from_its_pictures_size(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upscale's cost follows its output, so its picture's size: a restored relax upscale
    reads it as an edit does, and is estimated as at its submit."""
    enlarged, submitted, restored = await restored_relax_job(
        conn,
        tmp_path,
        monkeypatch,
        "upscale",
        lambda picture: upscale_request(RenderRequest("a cat"), picture, 4),
    )
    at_its_size = estimated_cost(enlarged, RenderSize(input_size=(512, 384))).gpu_seconds
    assert submitted == restored == at_its_size
    assert restored < estimated_cost(enlarged).gpu_seconds  # not a square of the native side


def _admitted(prompt: str, sampler: str = "Euler a", count: int = 1) -> RenderRequest:
    """``prompt`` as admission plans it (``plan_request`` records its work), 20 steps at 512."""
    typed = RenderRequest(prompt, steps=20, width=512, height=512, count=count, sampler=sampler)
    return plan_request(typed, (), None)


def test_the_estimate_counts_and_parts_long_prompts_and_a_second_order_sampler() -> None:
    """What each step does for a picture, as its plan says: 16 ``AND`` parts are 17 UNet rows
    where a plain prompt has 2, Heun calls the UNet twice a step, and 150 chunks lengthen
    every row's keys. At HEAD all of these were reckoned as the plain prompt."""
    plain = estimated_cost(_admitted("a red fox")).gpu_seconds
    parts = " AND ".join(f"a red fox {index}" for index in range(16))
    assert estimated_cost(_admitted("a red fox", "Heun")).gpu_seconds == pytest.approx(2 * plain)
    assert estimated_cost(_admitted(parts)).gpu_seconds == pytest.approx(8.5 * plain)
    heavy = estimated_cost(_admitted(parts, "Heun", count=4)).gpu_seconds
    assert heavy == pytest.approx(4 * 17 * plain)
    chunks = estimated_cost(_admitted(" BREAK ".join(["a red fox"] * 150))).gpu_seconds
    assert chunks == pytest.approx((1 + 149 * CHUNK_ROW_SHARE) * plain)
    # An ordinary prompt and its negative, two chunks: about the plain prompt's.
    long = _admitted(", ".join(["a red fox in the snow"] * 14))
    assert estimated_cost(long).gpu_seconds == pytest.approx(plain, rel=0.02)


def test_a_creative_upscales_tiles_count_its_prompts_work_and_sampler(tmp_path: Path) -> None:
    """The tiles run img2img with the picture's prompt and sampler: with 16 ``AND`` parts and
    Heun, admitted, each tile's steps cost 17 times a plain prompt's, as a render's do; the
    enlarging is the same."""
    picture = tmp_path / "picture.png"
    Image.new("RGB", (512, 512)).save(picture)

    def tiles_seconds(prompt: str, sampler: str) -> float:
        typed = RenderRequest(
            prompt,
            steps=20,
            sampler=sampler,
            mode="upscale",
            init_image=str(picture),
            options={"upscale_factor": 2, "upscale_mode": "creative"},
        )
        admitted = plan_request(typed, (), None)
        enlarging = upscale("fast", 2, (512, 512), native_side=512)
        return estimated_cost(admitted, RenderSize(512, (512, 512))).gpu_seconds - enlarging

    plain = tiles_seconds("a red fox", "Euler a")
    assert plain == pytest.approx(9 * seconds(size=384, steps=8), abs=0.01)
    heavy = tiles_seconds(" AND ".join(f"a red fox {index}" for index in range(16)), "Heun")
    assert heavy == pytest.approx(17 * plain, abs=0.02)


def test_a_forged_record_of_the_prompts_work_is_replaced_at_admission() -> None:
    forged = RenderRequest(
        " AND ".join(["a red fox"] * 16), options={PROMPT_WORK_OPTION: {"parts": 1}}
    )
    assert PromptWork.of(plan_request(forged, (), None).options) == PromptWork(16, 1)
    assert PROMPT_WORK_OPTION not in plan_request(_admitted("a red fox"), (), None).options


def test_prompts_of_very_different_work_a_picture_never_share_a_batch() -> None:
    """Every row of a call is padded to its longest prompt and every picture waits for all its
    rows: a plain prompt never batches with one of many ``AND`` parts or chunks. Ordinary
    prompts (one part, a few chunks with a long negative) still batch together."""
    plain = _admitted("a red fox").batch_key()
    assert _admitted("a blue bird on a branch, highly detailed").batch_key() == plain
    assert _admitted(", ".join(["a red fox in the snow"] * 30)).batch_key() == plain  # 3 chunks
    assert _admitted("a red fox AND a blue bird").batch_key() != plain
    assert _admitted(" AND ".join(["a red fox"] * 16)).batch_key() != plain
    assert _admitted(" BREAK ".join(["a red fox"] * 150)).batch_key() != plain
