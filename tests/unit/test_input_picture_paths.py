"""A member's input picture (init image, mask) the server no longer has: the member is told
which picture, never the server's path to it; the operator reads the path in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.jobs.broker.client import _read_picture
from inference.images import load_input_image
from inference.types import RenderInputError


def test_a_missing_picture_is_named_by_its_role_and_logged_with_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "inputs" / "gone.png"
    with pytest.raises(RenderInputError) as refused:
        load_input_image(gone, "init image")
    assert str(refused.value) == "init image is missing or not a file"
    assert str(gone) in caplog.text


def test_a_picture_a_broker_worker_cannot_read_is_named_by_its_role_and_logged_with_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "inputs" / "gone.png"
    with caplog.at_level(logging.WARNING), pytest.raises(RenderInputError) as refused:
        _read_picture("mask_image", str(gone))
    assert str(refused.value) == "mask image cannot be read: No such file or directory"
    assert str(gone) in caplog.text
