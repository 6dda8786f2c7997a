"""Who pays for a shared batch: its measured GPU time is shared by what each job would cost
alone (its pictures, each at its prompt's rows and key length), not by pictures, at its
render's end as at a stop while it renders on, and each share moves its member's place in
the fair order (real queue and SQLite, an instant engine)."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.jobs.queue.cancels import RunningBatch
from bot.jobs.queue.job_queue import _shares
from inference.prompt_work import PromptWork
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.scheduler_finishes import noted_finishes
from tests.support.sinks import started_queue

GUILD = 5


def and_parts(parts: int, seed: int = 1) -> RenderRequest:
    """A request whose prompt has ``parts`` ``AND`` parts, as admission records its work."""
    prompt = " AND ".join(["a red fox"] * parts)
    return RenderRequest(prompt, seed=seed, steps=2, options=PromptWork(parts).option())


async def test_a_batch_is_shared_by_each_jobs_own_work(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1's prompt has 4 ``AND`` parts (5 rows a picture), member 2's 3 (4 rows): one
    band, so one batch. Member 1 pays 5/9 of its time, member 2 4/9, where pictures alone
    said half each; the scheduler is told the same shares."""
    finished = noted_finishes(monkeypatch)

    engine = InstantEngine(seconds=0.3)
    slots = [DeviceWorker("cpu", lambda _: engine)]
    journaling = JobQueue(conn, slots, tmp_path / "images")  # journaled first: one batch
    heavier = await journaling.submit(Submission("imagine", and_parts(4, 1), 1, GUILD))
    lighter = await journaling.submit(Submission("imagine", and_parts(3, 2), 2, GUILD))
    queue, sink = await started_queue(conn, slots, tmp_path / "images")
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert engine.batches == [2]
    async with conn.execute(
        "SELECT job_id, gpu_seconds FROM quota_ledger WHERE kind = 'commit'"
    ) as cursor:
        charged = dict(await cursor.fetchall())
    assert charged[heavier] / charged[lighter] == pytest.approx(5 / 4, rel=0.02)
    measured = finished[heavier], finished[lighter]
    assert None not in measured
    assert measured[0] / measured[1] == pytest.approx(5 / 4)  # type: ignore[operator]


@pytest.mark.parametrize(("stopped", "partner"), [(9, 16), (16, 9)])
def test_a_stop_at_the_end_of_a_shared_render_charges_what_the_end_shares(
    stopped: int, partner: int
) -> None:
    """A 9-part and a 16-part ``AND`` job (one band, so one batch) render 10 s; one member
    stops their job at the very end while the render goes on for the other. Its charge at
    its stop and its partner's share at the render's end add up to the 10 s measured (by
    pictures at the stop, 11.3 s or 8.7 s were charged)."""
    stopping, rendering_on = and_parts(stopped), and_parts(partner)
    assert stopping.batch_key() == rendering_on.batch_key()
    running = RunningBatch(("stopped", "partner"), rendering=True)
    running.started_render({"stopped": stopping, "partner": rendering_on})
    running.cancel("stopped", owner_pays=True)
    running.cancelled_at["stopped"] = running.render_started + 10.0  # at the render's end
    at_stop = running.charge_at_stop("stopped")
    its_share, partners_share = _shares(10.0, [stopping, rendering_on], [1, 1])
    assert at_stop is not None and at_stop == pytest.approx(its_share)
    assert at_stop + partners_share == pytest.approx(10.0)
