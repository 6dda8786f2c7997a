"""Workers whose model folders differ (a new model copied to one machine before the others):
a worker asks only for the jobs of the models it has, and a job that still reaches one that
lacks its model goes back to the broker for one that has it, never failed there. A job for a
model no worker has is refused once it waited unpulled (``unpulled_wait_s``), not left to hold
the bot's slot until the stream drops it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from inference.tiny import write_tiny_model
from inference.types import RenderInputError, RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.polling import POLLED_WAIT_S, until

LACKING = "bot.jobs.broker.worker"


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


async def test_every_job_for_a_model_one_worker_lacks_renders_on_the_other(
    nats: NatsTransport, tiny_models_dir: Path, tmp_path: Path
) -> None:
    from inference.engine import Engine

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


async def test_a_job_whose_model_goes_as_it_is_taken_goes_back_for_another_worker(
    nats: NatsTransport,
    tiny_models_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model is removed from the first worker's folder between its listing and the job's
    render there: the job goes back to the broker (said once in the log), not failed, and the
    worker started later renders it."""
    from inference.engine import Engine

    losing, having = folders(tmp_path, tiny_models_dir)
    (losing / "extra").symlink_to(having / "extra")
    caplog.set_level(logging.WARNING, logger=LACKING)
    engine = Engine(losing, default_model="tiny")
    render = engine.render

    def removed_first(request: RenderRequest, *args: Any, **kwargs: Any) -> Any:
        (losing / "extra").unlink(missing_ok=True)
        return render(request, *args, **kwargs)

    engine.render = removed_first  # type: ignore[method-assign]
    nats.start_worker(engine, devices=("gpu-losing",))
    client = await nats.client()
    rendering = asyncio.ensure_future(
        client.render("job-extra", request_for("extra", 1), None, None)
    )

    def handed_back() -> bool:
        return any("does not have" in r.getMessage() for r in caplog.records)

    await until(handed_back)
    assert not rendering.done()  # not failed there
    nats.start_worker(Engine(having, default_model="tiny"), devices=("gpu-having",))
    [image] = await asyncio.wait_for(rendering, POLLED_WAIT_S)
    assert image.png
    told = [r.getMessage() for r in caplog.records if "does not have" in r.getMessage()]
    assert len(told) == 1 and "'extra'" in told[0]


async def test_a_job_for_a_model_no_worker_has_is_refused_once_it_waited_unpulled(
    nats: NatsTransport, tiny_models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot lists ``ghost``, no worker has it: a worker whose engine lists its models asks
    for none of its jobs, until one waited unpulled ``unpulled_wait_s``; then it takes it and
    refuses it (the member told, refunded), said once in the log."""
    from inference.engine import Engine

    caplog.set_level(logging.WARNING, logger=LACKING)
    engine = Engine(tiny_models_dir, default_model="tiny")
    nats.start_worker(engine, devices=("gpu-0",), unpulled_wait_s=0.5)
    client = await nats.client()
    [image] = await client.render("warm", request_for("tiny", 1), None, None)  # engine built
    assert image.png
    with pytest.raises(RenderInputError) as refused:
        await asyncio.wait_for(
            client.render("job-ghost", request_for("ghost", 2), None, None), POLLED_WAIT_S
        )
    assert str(refused.value) == (
        "model 'ghost' is not installed on any render worker: ask an admin"
    )
    told = [r.getMessage() for r in caplog.records if r.name == LACKING]
    assert len(told) == 1 and "'ghost' is installed on no render worker" in told[0]
