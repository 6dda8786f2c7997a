"""``easel worker``'s stop ends within its budget: the job in hand finishes, or is told to stop
and goes back to the broker (for another worker, not cancelled); a device stuck inside a step
is left to it, its job handed back at once, and the process ends with
``STUCK_DEVICE_EXIT_STATUS``; a second signal ends it at once; a stop during the warm start's
model load stops the warm-up and ends with status 0, one during the engine's build at the start
ends it at once, and one while it still imports torch before it serves, at 0. A real
nats-server."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.broker import worker
from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import Submission
from bot.jobs.queue import job_queue as queue_module
from bot.process_end import STUCK_DEVICE_EXIT_STATUS
from inference.types import RenderRequest
from tests.distributed.nats_server import PROCESS_WAIT_S, NatsServer, python_process, read_until
from tests.distributed.transports import NatsTransport
from tests.support.engines import STUCK_AT_MOST_S, HeldEngine, InstantEngine, StuckEngine
from tests.support.exits import Exited, exit_process
from tests.support.sinks import started_queue

BUDGET_S = 3.0
RENDER_AT_STOP_S = 0.5
MARGIN_S = 3.0
# A process's answer to a signal on a loaded machine, under the worker's 15 s render-at-stop
# budget: a second signal that waited out the stop would take 15 s or more.
SIGNAL_HEARD_S = 10.0
# Long past the test: a job the stopped worker did not hand back is not redelivered in it.
ACK_WAIT_S = 120.0
# The stop's budget of ``easel worker`` as a process (``tests.e2e.stuck_device_main``) whose
# load never ends, and of one whose load ends (a real load, seconds on a busy machine).
PROCESS_BUDGET_S = 5.0
PROCESS_BUDGET_PAST_A_LOAD_S = 30.0
# Its start, torch imported and the models scanned, on a machine busy with other tests.
START_TIMEOUT_S = 120


@pytest.fixture(autouse=True)
def short_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "STOP_BUDGET_S", BUDGET_S)
    monkeypatch.setattr(worker, "RENDER_AT_STOP_S", RENDER_AT_STOP_S)


def submission() -> Submission:
    return Submission("imagine", RenderRequest("a lake", steps=2), user_id=7, guild_id=5)


@asynccontextmanager
async def worker_rendering_a_job(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport, engine: HeldEngine
) -> AsyncIterator[tuple[str, asyncio.Task[int], asyncio.Event]]:
    """A worker on ``engine`` rendering the one job submitted (its id), its ``serve`` and the
    stop it was given, not yet set. After the block, checks the job went back to the broker
    (published by no one, then rendered by another worker at once); at the end ``engine`` is
    released and the worker ended."""
    client = await nats.client(slots=1, ack_wait_s=ACK_WAIT_S)
    queue, sink = await started_queue(conn, client.slots(), tmp_path)
    job_id = await queue.submit(submission())
    stop = asyncio.Event()
    config = WorkerConfig(nats.server.url, ("gpu-0",), idle_poll_s=0.1)
    serving = asyncio.create_task(serve(config, lambda _: engine, stop, exit_process=exit_process))
    try:
        assert await asyncio.to_thread(engine.started.wait, 30)
        yield job_id, serving, stop
        assert sink.delivered == []  # not published cancelled: the member asked for no stop
        nats.start_worker(InstantEngine())
        async with asyncio.timeout(ACK_WAIT_S / 4):  # handed back, not left to its ack wait
            await sink.wait_for(1)
        assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
    finally:
        engine.released.set()
        await asyncio.wait([serving])
        await queue.stop()


async def test_a_render_still_running_at_the_stop_is_stopped_and_its_job_renders_elsewhere(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    held = HeldEngine()  # not released while it renders: it ends by its stop alone
    async with worker_rendering_a_job(conn, tmp_path, nats, held) as (_job_id, serving, stop):
        stop.set()
        async with asyncio.timeout(BUDGET_S + MARGIN_S):
            assert await asyncio.shield(serving) == 0


async def test_a_device_stuck_in_a_step_ends_the_worker_within_its_stop_and_hands_its_job_back(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stuck = StuckEngine()
    async with worker_rendering_a_job(conn, tmp_path, nats, stuck) as (job_id, serving, stop):
        with caplog.at_level(logging.WARNING, logger=worker.__name__):
            stop.set()
            async with asyncio.timeout(BUDGET_S + MARGIN_S):
                with pytest.raises(Exited) as exited:
                    await asyncio.shield(serving)
        assert exited.value.status == STUCK_DEVICE_EXIT_STATUS
        [said] = [line for line in caplog.messages if "still busy" in line]
        assert f"gpu-0 in job {job_id}" in said


class SlowBuild:
    """An engine factory whose build (torch imported, the models scanned) lasts until
    ``released``: ``building`` says it began, ``built`` that it returned."""

    def __init__(self) -> None:
        self.building = threading.Event()
        self.released = threading.Event()
        self.built = threading.Event()

    def __call__(self, _device: str) -> InstantEngine:
        self.building.set()
        self.released.wait(STUCK_AT_MOST_S)
        self.built.set()
        return InstantEngine()


async def test_a_stop_during_the_engines_build_ends_the_worker_without_waiting_for_it(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stop at the start, while the device thread builds its engine for the probe (seconds
    of imports and scans on a real one), is not held for the build, however long the stop's
    budget: the worker ends at 0, the build left to its thread, and takes no job (the one
    queued goes to another worker at once, not after its ack wait)."""
    monkeypatch.setattr(worker, "STOP_BUDGET_S", STUCK_AT_MOST_S)  # not what ends it
    monkeypatch.setattr(worker, "RENDER_AT_STOP_S", STUCK_AT_MOST_S)
    client = await nats.client(slots=1, ack_wait_s=ACK_WAIT_S)
    queue, sink = await started_queue(conn, client.slots(), tmp_path)
    job_id = await queue.submit(submission())
    build = SlowBuild()
    stop = asyncio.Event()
    config = WorkerConfig(nats.server.url, ("gpu-0",), idle_poll_s=0.1)
    serving = asyncio.create_task(serve(config, build, stop, exit_process=exit_process))
    try:
        assert await asyncio.to_thread(build.building.wait, START_TIMEOUT_S)
        with caplog.at_level(logging.INFO, logger="bot.process_end"):
            stop.set()
            async with asyncio.timeout(START_TIMEOUT_S / 6):  # the build never ends meanwhile
                with pytest.raises(Exited) as exited:
                    await asyncio.shield(serving)
        assert exited.value.status == 0
        assert not build.built.is_set()
        assert "stopped while gpu-0 was still loading its engine: not waited for" in " ".join(
            caplog.messages
        )
        nats.start_worker(InstantEngine())
        async with asyncio.timeout(ACK_WAIT_S / 4):  # never taken: not left to its ack wait
            await sink.wait_for(1)
        assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
    finally:
        build.released.set()
        assert await asyncio.to_thread(build.built.wait, STUCK_AT_MOST_S)
        await asyncio.wait([serving])
        await queue.stop()


async def test_a_second_stop_signal_ends_the_worker_at_once(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    nats: NatsTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The job the ended worker held never comes back: the queue's stop does not wait for it.
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_S", 0.05)
    client = await nats.client(slots=1, ack_wait_s=ACK_WAIT_S)
    queue, _sink = await started_queue(conn, client.slots(), tmp_path)
    busy = await python_process(
        "-m", "tests.distributed.worker_main", nats.server.url, "--seconds", "120"
    )
    try:
        await read_until(busy, "serving", PROCESS_WAIT_S)
        job_id = await queue.submit(submission())
        await read_until(busy, f"job {job_id}: started", PROCESS_WAIT_S)  # for 120 s
        busy.send_signal(signal.SIGTERM)
        # Heard first (two signals sent at once may be handled in either order).
        await read_until(busy, "stopping:", SIGNAL_HEARD_S)
        busy.send_signal(signal.SIGINT)  # whoever sent it will not wait out the stop
        await read_until(busy, "SIGINT again while stopping", SIGNAL_HEARD_S)
        async with asyncio.timeout(SIGNAL_HEARD_S):
            assert await busy.wait() == -signal.SIGINT
    finally:
        if busy.returncode is None:
            busy.kill()
            await busy.wait()
        await queue.stop()


@pytest.mark.parametrize(
    ("module", "command", "said"),
    [
        ("torch", "worker", "stopped by SIGTERM before serving"),
        ("bot.cli.main", "worker", "stopped by SIGTERM before serving"),
        ("bot.cli.main", "run", "stopped by SIGTERM before starting"),
    ],
    ids=["worker-importing-torch", "worker-importing-its-command-line", "run-importing-it"],
)
async def test_a_stop_while_easel_imports_ends_it_at_0_before_it_serves(
    tmp_path: Path, module: str, command: str, said: str
) -> None:
    """SIGTERM before the event loop handles it (the seconds of importing torch, or the
    command line's own imports from the process's first statement on): heard, the start goes
    on to the loop, which stops at once: status 0, no broker asked (none listens at the
    worker's URL), no job taken, nothing started."""
    go = tmp_path / "go"
    environment = {
        "EASEL_QUEUE_URL": "nats://127.0.0.1:1",
        "EASEL_DATA_DIR": str(tmp_path / "data"),
        "EASEL_DEVICES": "cpu",
        "DISCORD_TOKEN": "a-token-never-used",
    }
    if command == "run":  # the bot renders in-process (no broker), and never logs in
        del environment["EASEL_QUEUE_URL"]
    process = await python_process(
        "-m",
        "tests.distributed.held_import_main",
        str(go),
        module,
        command,
        environment=environment,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await read_until(process, f"importing {module}", START_TIMEOUT_S)
        process.send_signal(signal.SIGTERM)
        go.touch()  # the import goes on
        async with asyncio.timeout(START_TIMEOUT_S):
            output = (await process.communicate())[0].decode()
        assert process.returncode == 0, output
        assert said in output
        assert not (tmp_path / "data" / "easel.sqlite3").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def worker_loading(
    server: NatsServer, models_dir: Path, data_dir: Path, budget_s: float, *load_s: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``easel worker`` as a process (the real engine on the CPU, ``EASEL_WARM_START``), its
    stop's budget ``budget_s``, its warm-up inside the load of the default model: one that
    never ends, or ends after ``load_s`` (``tests.e2e.stuck_device_main``); its log read on its
    output."""
    main = ("-m", "tests.e2e.stuck_device_main", str(budget_s), "load", *load_s)
    environment = {
        "EASEL_QUEUE_URL": server.url,
        "EASEL_DATA_DIR": str(data_dir),
        "EASEL_MODELS_DIR": str(models_dir),
        "EASEL_DEVICES": "cpu",
    }
    process = await python_process(
        *main, "--worker", environment=environment, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await read_until(process, "stuck in a load", START_TIMEOUT_S)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stopped(process: asyncio.subprocess.Process, budget_s: float) -> tuple[int, str]:
    """SIGTERM ``process``: its exit status, within its stop's ``budget_s``, and the rest of
    its output."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(budget_s + MARGIN_S):
        output = (await process.communicate())[0].decode()
    assert process.returncode is not None
    return process.returncode, output


async def test_a_stop_during_a_warm_up_load_that_never_ends_ends_the_worker_at_0(
    nats_server: NatsServer, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """A restart during the warm start's load (a slow disk) is no stuck device: the worker
    ends once its stop's budget is spent, without the load, with ``easel run``'s status for it
    (``status_after_stop``), not the stuck device's, and no traceback."""
    data_dir = tmp_path / "data"
    async with worker_loading(nats_server, tiny_models_dir, data_dir, PROCESS_BUDGET_S) as loading:
        status, said = await stopped(loading, PROCESS_BUDGET_S)
    assert status == 0, said
    assert "stopped while cpu was still loading model " in said
    assert "Traceback" not in said and "still busy" not in said


async def test_a_stop_during_a_warm_up_load_stops_the_warm_up_once_the_load_ends(
    nats_server: NatsServer, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """The stop is not held for what the warm-up had not started: its step and the device's
    probe are skipped once the load (which no stop interrupts) ends, and the worker ends at
    0 then, not once its stop's budget is spent (with the load named as not waited for)."""
    budget_s = PROCESS_BUDGET_PAST_A_LOAD_S
    data_dir = tmp_path / "data"
    async with worker_loading(nats_server, tiny_models_dir, data_dir, budget_s, "2") as loading:
        status, said = await stopped(loading, budget_s)
    assert status == 0, said
    assert "warm start on cpu stopped: shutting down" in said, said
    assert "Traceback" not in said and "still loading" not in said
