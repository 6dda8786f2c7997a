"""The exit status of a stop that leaves device threads busy (``status_after_stop``): one
inside a step or a job is a stuck device (3, a "failed" unit); one only loading a model is
no fault (0, named in the log); a lost device's status stays whatever else is left."""

from __future__ import annotations

import logging

import pytest

from bot.process_end import SETTINGS_EXIT_STATUS, STUCK_DEVICE_EXIT_STATUS, status_after_stop
from inference.device_loss import DEVICE_LOST_EXIT_STATUS

IN_A_STEP = ["cuda:0 in job abc"]
LOADING = ["cuda:1 was still loading model sdxl"]


@pytest.mark.parametrize(
    ("status", "in_work", "loading", "failed", "expected"),
    [
        (0, IN_A_STEP, [], False, STUCK_DEVICE_EXIT_STATUS),
        (0, IN_A_STEP, LOADING, False, STUCK_DEVICE_EXIT_STATUS),
        (0, [], LOADING, False, 0),
        (0, [], LOADING, True, 1),  # the bot failed: not a clean stop
        (0, IN_A_STEP, [], True, STUCK_DEVICE_EXIT_STATUS),
        (DEVICE_LOST_EXIT_STATUS, IN_A_STEP, [], False, DEVICE_LOST_EXIT_STATUS),
        (DEVICE_LOST_EXIT_STATUS, [], LOADING, False, DEVICE_LOST_EXIT_STATUS),
    ],
    ids=["step", "step-and-load", "load", "load-failed", "step-failed", "lost-step", "lost-load"],
)
def test_a_thread_left_in_a_step_is_a_stuck_device_one_left_loading_is_not(
    status: int,
    in_work: list[str],
    loading: list[str],
    failed: bool,
    expected: int,
) -> None:
    assert status_after_stop(status, in_work, loading, failed=failed) == expected


def test_each_thread_left_loading_is_named_with_what_it_loads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="bot.process_end"):
        status_after_stop(0, [], [*LOADING, "cpu was still loading its engine"])
    assert caplog.messages == [
        "stopped while cuda:1 was still loading model sdxl: not waited for (no job was running "
        "there)",
        "stopped while cpu was still loading its engine: not waited for (no job was running there)",
    ]


@pytest.mark.parametrize(
    ("status", "in_work", "loading", "expected"),
    [
        (0, IN_A_STEP, [], SETTINGS_EXIT_STATUS),
        (0, [], LOADING, SETTINGS_EXIT_STATUS),
        (DEVICE_LOST_EXIT_STATUS, IN_A_STEP, [], DEVICE_LOST_EXIT_STATUS),
    ],
    ids=["step", "load", "lost"],
)
def test_a_run_its_settings_ended_exits_as_the_settings_refusal_unless_a_device_was_lost(
    status: int, in_work: list[str], loading: list[str], expected: int
) -> None:
    """A token reset while a device is busy: the operator's fix is the token (status 2, as
    at a start), not a stuck device's (3) nor a crash's (1); a lost device's restart stays."""
    assert (
        status_after_stop(status, in_work, loading, failed=True, settings_refused=True) == expected
    )
