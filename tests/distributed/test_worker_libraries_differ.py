"""Workers whose model folders differ (a new model copied to one machine before the others):
a worker asks only for the jobs of the models it has, and a job that still reaches one that
lacks its model goes back to the broker for one that has it, never failed there. A job for a
model no live worker has (by the workers' heartbeats) is refused by the bot after
``unserved_wait_s``, also one a worker took and handed back, not left to hold the bot's slot
until the stream drops it."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats as nats_module
import pytest
from nats.aio.msg import Msg

from bot.jobs.broker import worker as worker_module
from bot.jobs.broker.wire import JOBS_STREAM, WORKERS_SUBJECT, WorkerModels
from bot.jobs.queue import MAX_RENDER_ATTEMPTS
from inference.tiny import write_tiny_model, write_tiny_vae
from inference.types import RenderCancelled, RenderedImage, RenderInputError, RenderRequest
from tests.distributed.nats_server import NatsServer
from tests.distributed.transports import NatsTransport
from tests.support.engines import HeldEngine
from tests.support.polling import POLLED_WAIT_S, until

if TYPE_CHECKING:
    from inference.engine import Engine

LACKING = "bot.jobs.broker.worker"
CLIENT = "bot.jobs.broker.client"


def request_for(model: str, seed: int) -> RenderRequest:
    return RenderRequest("a cat", seed=seed, steps=1, width=64, height=64, model=model)


def folders(tmp_path: Path, tiny_models_dir: Path) -> tuple[Path, Path]:
    """Two model folders with ``tiny``; the second also has ``extra``."""
    lacking, having = tmp_path / "lacking", tmp_path / "having"
    for folder in (lacking, having):
        folder.mkdir()
        (folder / "tiny").symlink_to(tiny_models_dir / "tiny")
    write_tiny_model(having / "extra", seed=3)
    return lacking, having


def losing_extra(tmp_path: Path, tiny_models_dir: Path) -> tuple[Engine, Path]:
    """An engine whose folder has ``extra`` until its first render begins (the model goes
    between the worker's listing and the render), and the folder that keeps it."""
    from inference.engine import Engine

    losing, having = folders(tmp_path, tiny_models_dir)
    (losing / "extra").symlink_to(having / "extra")
    engine = Engine(losing, default_model="tiny")
    render = engine.render

    def removed_first(request: RenderRequest, *args: Any, **kwargs: Any) -> Any:
        (losing / "extra").unlink(missing_ok=True)
        return render(request, *args, **kwargs)

    engine.render = removed_first  # type: ignore[method-assign]
    return engine, having


async def rendered_once_handed_back(
    nats: NatsTransport,
    rendering: asyncio.Future[list[RenderedImage]],
    caplog: pytest.LogCaptureFixture,
    handing_back: str,
    having: Path,
) -> None:
    """Once the worker's log says ``handing_back`` (the job went back to the broker), the job
    is not failed; a worker started then on the folder ``having`` renders it."""
    from inference.engine import Engine

    await until(lambda: any(handing_back in r.getMessage() for r in caplog.records))
    assert not rendering.done()  # not failed there
    nats.start_worker(Engine(having, default_model="tiny"), devices=("gpu-having",))
    [image] = await asyncio.wait_for(rendering, POLLED_WAIT_S)
    assert image.png


async def test_every_job_for_a_model_one_worker_lacks_renders_on_the_other(
    nats: NatsTransport, nats_server: NatsServer, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """Also: the two workers, in one process (one host name and pid, as containers that each
    run Easel as pid 1 on one host name), tell the bot their models under names of their own,
    not overwriting each other's (the bot would take the one that has ``extra`` as gone)."""
    from inference.engine import Engine

    heard: set[str] = set()
    spy = await nats_module.connect(nats_server.url)

    async def on_beat(msg: Msg) -> None:
        heard.add(WorkerModels.decode(msg.data).worker)

    await spy.subscribe(WORKERS_SUBJECT, cb=on_beat)
    await spy.flush()
    lacking, having = folders(tmp_path, tiny_models_dir)
    nats.start_worker(Engine(lacking, default_model="tiny"), devices=("gpu-lacking",))
    nats.start_worker(Engine(having, default_model="tiny"), devices=("gpu-having",))
    client = await nats.client(slots=4)
    # Waves of four: both workers idle and asking when each wave is published.
    for wave in range(3):
        jobs = [
            client.render(f"job-{wave}-{n}", request_for("extra", 4 * wave + n), None, None)
            for n in range(4)
        ]
        for images in await asyncio.gather(*jobs):
            assert len(images) == 1 and images[0].png
    try:
        await until(lambda: len(heard) == 2)
    finally:
        await spy.close()


async def test_a_job_whose_model_goes_as_it_is_taken_goes_back_for_another_worker(
    nats: NatsTransport,
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model is removed from the first worker's folder between its listing and the job's
    render there: the job goes back to the broker (said once in the log), not failed, and the
    worker started later renders it."""

    caplog.set_level(logging.WARNING, logger=LACKING)
    engine, having = losing_extra(tmp_path, tiny_models_dir)
    nats.start_worker(engine, devices=("gpu-losing",))
    client = await nats.client()
    rendering = asyncio.ensure_future(
        client.render("job-extra", request_for("extra", 1), None, None)
    )
    await rendered_once_handed_back(nats, rendering, caplog, "does not have", having)
    told = [r.getMessage() for r in caplog.records if "does not have" in r.getMessage()]
    assert len(told) == 1 and "'extra'" in told[0]


async def test_a_job_for_a_model_no_worker_has_is_refused_after_the_wait(
    nats: NatsTransport, tiny_models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot lists ``ghost``, no worker has it: the worker, whose heartbeat lists its
    models, asks for none of its jobs; once no live worker had it for ``unserved_wait_s`` the
    bot refuses the job (the member told, refunded), said once in its log."""
    from inference.engine import Engine

    caplog.set_level(logging.WARNING, logger=CLIENT)
    nats.start_worker(Engine(tiny_models_dir, default_model="tiny"), heartbeat_s=0.1)
    client = await nats.client(unserved_wait_s=0.5)
    with pytest.raises(RenderInputError) as refused:
        await asyncio.wait_for(
            client.render("job-ghost", request_for("ghost", 2), None, None), POLLED_WAIT_S
        )
    assert str(refused.value) == (
        "model 'ghost' is not installed on any render worker: ask an admin"
    )
    told = [r.getMessage() for r in caplog.records if r.name == CLIENT]
    assert len(told) == 1 and "had the model 'ghost'" in told[0]


async def test_a_job_handed_back_for_a_model_no_live_worker_has_is_refused(
    nats: NatsTransport,
    nats_server: NatsServer,
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model goes as the only worker takes its job: the job, handed back, stays in hand
    to the broker (no pull counts show it waiting), yet the bot refuses it once no live
    worker had the model for ``unserved_wait_s``, and its message leaves the jobs stream."""

    caplog.set_level(logging.WARNING)
    engine, _ = losing_extra(tmp_path, tiny_models_dir)
    nats.start_worker(engine, heartbeat_s=0.1)
    client = await nats.client(unserved_wait_s=0.5)
    with pytest.raises(RenderInputError, match="'extra' is not installed on any render worker"):
        await asyncio.wait_for(
            client.render("job-extra", request_for("extra", 1), None, None), POLLED_WAIT_S
        )

    def said(words: str) -> bool:
        return any(words in r.getMessage() for r in caplog.records)

    assert said("had the model 'extra'")
    await until(lambda: said("does not have"))  # handed back by the worker, not failed there
    checker = await nats_module.connect(nats_server.url)
    try:
        assert (await checker.jetstream().stream_info(JOBS_STREAM)).state.messages == 0
    finally:
        await checker.close()


def with_vae(seed: int) -> RenderRequest:
    return RenderRequest(
        "a cat", seed=seed, steps=1, width=64, height=64, model="tiny", options={"vae": "blue"}
    )


async def test_a_job_needing_an_add_on_one_worker_lacks_goes_back_alone_for_the_other(
    nats: NatsTransport,
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job names a VAE the first worker lacks: it goes back to the broker once, not
    refused there, for ``LACKING_ADDON_DELAY_S``; that job alone: the worker takes the
    model's next job while it is handed back. The worker started later, which has it,
    renders it."""
    from inference.engine import Engine

    nak = worker_module._nak
    delays: list[float | None] = []

    async def once_the_plain_job_is_taken(msg: Msg, delay_s: float | None = None) -> None:
        """The hand-back's delay, ended once the lacking worker renders the plain job: that
        one is taken with the first still handed back (else this waits for ever)."""
        if delay_s == worker_module.LACKING_ADDON_DELAY_S:
            delays.append(delay_s)
            await until(entered.is_set)
            delay_s = None
        await nak(msg, delay_s)

    monkeypatch.setattr(worker_module, "_nak", once_the_plain_job_is_taken)
    lacking, having = folders(tmp_path, tiny_models_dir)
    write_tiny_vae(having / "vae" / "blue.safetensors")
    caplog.set_level(logging.INFO, logger=LACKING)
    engine = Engine(lacking, default_model="tiny")
    render, entered, released = engine.render, threading.Event(), threading.Event()

    def held(request: RenderRequest, *args: Any, **kwargs: Any) -> Any:
        if not request.options:  # the plain job: held while the other worker takes the first
            entered.set()
            released.wait(POLLED_WAIT_S)
        return render(request, *args, **kwargs)

    engine.render = held  # type: ignore[method-assign]
    nats.start_worker(engine, devices=("gpu-lacking",))
    client = await nats.client()
    rendering = asyncio.ensure_future(client.render("job-blue", with_vae(1), None, None))
    await until(lambda: any("needs an add-on" in r.getMessage() for r in caplog.records))
    plain = asyncio.ensure_future(client.render("job-plain", request_for("tiny", 2), None, None))
    try:
        await until(entered.is_set)
        await rendered_once_handed_back(nats, rendering, caplog, "needs an add-on", having)
    finally:
        released.set()
    [image] = await asyncio.wait_for(plain, POLLED_WAIT_S)
    assert image.png
    assert delays == [worker_module.LACKING_ADDON_DELAY_S]  # handed back once, delayed


async def test_a_job_needing_an_add_on_no_worker_has_is_refused_at_its_last_attempt(
    nats: NatsTransport,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handed back at each attempt but its last, which is refused with the engine's words
    (the member told, refunded), not reported lost with its workers."""
    from inference.engine import Engine

    monkeypatch.setattr(worker_module, "LACKING_ADDON_DELAY_S", 0.1)
    caplog.set_level(logging.INFO, logger=LACKING)
    nats.start_worker(Engine(tiny_models_dir, default_model="tiny"))
    client = await nats.client()
    with pytest.raises(RenderInputError, match="unknown VAE 'blue': it is not installed"):
        await asyncio.wait_for(client.render("job-blue", with_vae(1), None, None), POLLED_WAIT_S)
    started = [r.getMessage() for r in caplog.records if "job-blue: started" in r.getMessage()]
    # Handed back before (each hand-back one of its attempts), refused at the last.
    assert len(started) >= 2 and started[-1].endswith(f"(delivery {MAX_RENDER_ATTEMPTS})")


async def test_a_job_refused_while_a_worker_not_heard_renders_it_is_stopped_there(
    nats: NatsTransport,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker older than the bot (no heartbeat) takes the job for ``extra``, which the only
    worker heard lacks: the bot refuses it after ``unserved_wait_s`` (the member refunded),
    and its cancel stops the render there at once rather than let it run on for nothing."""
    from inference.engine import Engine

    tell_models = worker_module._tell_models

    async def silent_on_old(hub: Any, loops: list[Any], every_s: float) -> None:
        if any(each.device == "gpu-old" for each in loops):
            return  # a worker from before the heartbeat
        await tell_models(hub, loops, every_s)

    monkeypatch.setattr(worker_module, "_tell_models", silent_on_old)
    lacking, _ = folders(tmp_path, tiny_models_dir)
    old = StoppedEngine()
    try:
        nats.start_worker(old, devices=("gpu-old",))
        # An ack wait of 10 minutes: the worker's own look for a result, every third of it,
        # would stop the render too, later.
        client = await nats.client(ack_wait_s=600, unserved_wait_s=0.5)
        rendering = asyncio.ensure_future(
            client.render("job-extra", request_for("extra", 1), None, None)
        )
        await until(old.started.is_set)  # no worker heard yet: nothing refused
        new = Engine(lacking, default_model="tiny")
        nats.start_worker(new, devices=("gpu-new",), heartbeat_s=0.1)
        with pytest.raises(RenderInputError, match="'extra' is not installed on any render"):
            await asyncio.wait_for(rendering, POLLED_WAIT_S)
        await until(old.stopped.is_set)
    finally:
        old.released.set()


@dataclass
class StoppedEngine(HeldEngine):
    """A held render that says when a cancel stopped it."""

    stopped: threading.Event = field(default_factory=threading.Event)

    def render_batch(self, *args: Any, **kwargs: Any) -> list[list[RenderedImage]]:
        try:
            return super().render_batch(*args, **kwargs)
        except RenderCancelled:
            self.stopped.set()
            raise
