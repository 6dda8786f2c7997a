"""The next batch's prompts are expanded on a CPU thread while the device renders the current
one; the device thread takes the plans made ahead, and the pictures are the same bytes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.jobs.scheduler import SchedulerConfig
from db.database import connect
from inference.engine import Engine
from inference.passes.jobs import ImageJob, image_jobs
from inference.prepared import KEPT_REQUESTS, PreparedJobs
from inference.types import RenderInputError, RenderRequest
from inference.worker import DeviceWorker
from tests.support.sinks import RecordingSink

PROMPT = "a {red|teal|amber} lighthouse at [dawn:dusk:0.5], [oil painting|watercolor]"


def request(seed: int, prompt: str = PROMPT) -> RenderRequest:
    return RenderRequest(prompt, seed=seed, steps=3, width=64, height=64, count=2)


class CountingExpand:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, request: RenderRequest) -> list[ImageJob]:
        self.threads.append(threading.current_thread().name)
        return image_jobs(request, None, (), ())


def test_prepared_jobs_are_taken_once_and_equal_to_expanding_on_the_spot() -> None:
    expand = CountingExpand()
    prepared = PreparedJobs(expand)
    thread = threading.Thread(target=prepared.prepare, args=([request(1)],), name="cpu")
    thread.start()
    thread.join()
    assert prepared.jobs(request(1)) == image_jobs(request(1), None, (), ())
    assert expand.threads == ["cpu"]
    prepared.jobs(request(1))  # taken already: expanded again, here
    assert expand.threads == ["cpu", threading.current_thread().name]


def test_only_the_latest_predictions_are_kept() -> None:
    expand = CountingExpand()
    prepared = PreparedJobs(expand)
    prepared.prepare([request(seed) for seed in range(KEPT_REQUESTS)])
    prepared.prepare([request(KEPT_REQUESTS)])  # the oldest guess is dropped for it
    assert len(expand.threads) == KEPT_REQUESTS + 1
    prepared.jobs(request(KEPT_REQUESTS))
    prepared.jobs(request(1))
    assert len(expand.threads) == KEPT_REQUESTS + 1  # both were still prepared
    prepared.jobs(request(0))
    assert len(expand.threads) == KEPT_REQUESTS + 2  # expanded again


def test_a_bad_prompt_prepared_ahead_fails_its_render_with_the_same_sentence() -> None:
    bad = request(1, "{" * 40 + "a" + "}" * 40)  # braces nested too deep
    prepared = PreparedJobs(lambda r: image_jobs(r, None, (), ()))
    prepared.prepare([bad])
    with pytest.raises(RenderInputError) as ahead:
        prepared.jobs(bad)
    with pytest.raises(RenderInputError) as on_the_spot:
        image_jobs(bad, None, (), ())
    assert str(ahead.value) == str(on_the_spot.value)


async def test_the_queue_has_the_next_batch_expanded_while_the_device_renders(
    models_dir: Path, tmp_path: Path
) -> None:
    engine = Engine(models_dir)
    expanded_on: dict[int, str] = {}
    expand = engine._expanded_jobs

    def recording(request: RenderRequest) -> list[ImageJob]:
        expanded_on[request.seed or 0] = threading.current_thread().name
        return expand(request)

    engine._prepared = PreparedJobs(recording)
    all_queued = threading.Event()

    def engine_once_all_are_queued(_device: str) -> Engine:
        all_queued.wait(timeout=30)  # built on the device thread at the first render
        return engine

    conn = await connect(tmp_path / "easel.sqlite3")
    queue = JobQueue(
        conn,
        [DeviceWorker("cpu", engine_once_all_are_queued)],
        tmp_path / "images",
        scheduler_config=SchedulerConfig(max_batch=1),
    )
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    job_ids = [
        await queue.submit(Submission("imagine", request(seed), user_id=seed))
        for seed in (1, 2, 3, 4)
    ]
    all_queued.set()
    async with asyncio.timeout(120):  # four renders on a loaded 2-core machine
        while len(sink.delivered) < 4:
            sink.arrived.clear()
            await sink.arrived.wait()
    await queue.stop()
    await conn.close()
    assert [job.job_id for job in sink.delivered] == job_ids
    assert all(job.succeeded for job in sink.delivered)
    # The first render had nothing to take (the second was guessed as the first started,
    # around when the engine came to exist). From then on each job's prompts were expanded
    # ahead, while the one before it rendered.
    assert expanded_on[1] == "easel-cpu_0"
    assert expanded_on[3] == expanded_on[4] == "easel-cpu-prepare_0"
    alone = Engine(models_dir).render(request(4))
    stored = sorted((tmp_path / "images" / job_ids[3]).iterdir())
    assert [path.read_bytes() for path in stored] == [image.png for image in alone]
