"""A worker keeps a job's input pictures in a folder of its own under one root
(``WorkerConfig.job_files_root``; EASEL_DATA_DIR/job-inputs for ``easel worker``), not the
system's temporary folder: what a worker ended abruptly left there (its second stop signal)
goes when a worker next starts on that root, while the folder of a worker still running there
stays. Real worker processes on a real broker."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiosqlite

from tests.distributed.nats_server import PROCESS_WAIT_S, python_process, read_until
from tests.distributed.test_broker_copies import MEMBER, with_large_input
from tests.distributed.transports import NatsTransport
from tests.support.polling import until
from tests.support.sinks import started_queue

# Never reached: the job renders until its worker is ended.
RENDER_S = 300.0
SIGNAL_HEARD_S = 10.0


async def started_worker(nats: NatsTransport, root: Path) -> asyncio.subprocess.Process:
    worker = await python_process(
        "-m",
        "tests.distributed.worker_main",
        nats.server.url,
        "--seconds",
        str(RENDER_S),
        "--job-files",
        str(root),
    )
    await read_until(worker, "serving", PROCESS_WAIT_S)
    return worker


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and "lock" not in path.name)


def workers_folders(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir())


async def test_what_a_worker_ended_at_once_left_goes_when_a_worker_starts(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    client = await nats.client(slots=1, ack_wait_s=RENDER_S)
    queue, _sink = await started_queue(conn, client.slots(), tmp_path / "images")
    root = tmp_path / "job-inputs"
    workers: list[asyncio.subprocess.Process] = []
    try:
        workers.append(ended := await started_worker(nats, root))
        job_id = await queue.submit(with_large_input(tmp_path, MEMBER))
        await read_until(ended, f"job {job_id}: started", PROCESS_WAIT_S)
        await until(lambda: files_under(root))  # its input, written for the render
        (left_folder,) = workers_folders(root)
        left = files_under(root)
        assert all(path.is_relative_to(left_folder) for path in left)

        # A second worker on the same root (compose's shared volume) keeps a running one's.
        workers.append(running := await started_worker(nats, root))
        assert files_under(root) == left

        ended.send_signal(signal.SIGTERM)
        await read_until(ended, "stopping:", SIGNAL_HEARD_S)
        ended.send_signal(signal.SIGINT)  # ends it at once: its job's folder is left
        async with asyncio.timeout(SIGNAL_HEARD_S):
            assert await ended.wait() == -signal.SIGINT
        assert files_under(root) == left

        workers.append(started := await started_worker(nats, root))
        assert files_under(root) == []
        assert left_folder not in workers_folders(root)
        assert len(workers_folders(root)) == 2  # the running worker's, the new one's

        for worker in (running, started):  # stopped as asked: each takes its folder away
            worker.send_signal(signal.SIGTERM)
            async with asyncio.timeout(PROCESS_WAIT_S):
                assert await worker.wait() == 0
        assert workers_folders(root) == []
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await queue.stop()
