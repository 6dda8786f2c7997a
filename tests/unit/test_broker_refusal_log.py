"""nats-py's error callback (``bot.jobs.broker.wire._error_logger``): a permissions violation
is logged once per right and subject less its last token, so a right refused on each job's
subjects, or each acknowledgement's, is not logged once per job forever."""

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
