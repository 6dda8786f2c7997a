"""nats-py's error callback (``bot.jobs.broker.wire._error_logger``): a permissions violation
is logged once per right and subject's first tokens (four for a JetStream API request), so a
right refused on each job's subjects, or each acknowledgement's, is not logged once per job
forever, and each JetStream right refused is logged."""

from __future__ import annotations

import logging

import nats.errors
import pytest

from bot.jobs.broker import wire


async def test_a_refusal_on_each_jobs_subject_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_error = wire._error_logger()
    for job in range(200):
        for subject in (f"easel.results.job-{job}", f"$JS.ACK.EASEL_JOBS.gpu.1.{job}.{job}.0.0"):
            await on_error(
                nats.errors.Error(f'nats: permissions violation for publish to "{subject}"'.lower())
            )
    await on_error(
        nats.errors.Error('nats: permissions violation for subscription to "easel.results.*"')
    )
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 3  # results, acknowledgements, and the subscription


async def test_a_refused_consumer_create_is_logged_after_a_refused_stream_create(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each JetStream request refused is another right missing: the probe's stream creates
    (repeated every 30 s) are logged once, and a consumer create refused later all the same."""
    on_error = wire._error_logger()
    refused = [
        *["$js.api.stream.create.easel_jobs"] * 3,
        "$js.api.stream.create.easel_results",
        "$js.api.consumer.durable.create.easel_jobs.model-default",
    ]
    for subject in refused:
        await on_error(nats.errors.Error(f'nats: permissions violation for publish to "{subject}"'))
    logged = [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [str(error).split('"')[1] for error in logged] == [
        "$js.api.stream.create.easel_jobs",
        "$js.api.consumer.durable.create.easel_jobs.model-default",
    ]
