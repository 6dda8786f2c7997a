"""Masks from words with CLIPSeg: a tiny random model written locally, never downloaded."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.segment import load_segmenter, segment, write_tiny_clipseg
from inference.types import RenderInputError
from tests.inference.conftest import mapped_under


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_clipseg(directory / "clipseg")
    return directory


def picture(tmp_path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    path = tmp_path / "picture.png"
    Image.new("RGB", size, "skyblue").save(path)
    return path


def test_the_mask_has_the_pictures_size_and_is_black_and_white(
    models_dir: Path, tmp_path: Path
) -> None:
    mask = segment(models_dir, picture(tmp_path), "the sky")
    assert mask.mode == "L" and mask.size == (96, 64)
    assert set(np.unique(np.asarray(mask))) <= {0, 255} and mask.getextrema()[1] == 255
    assert mapped_under(models_dir) == set()  # a ``cp`` over the loaded model ends nothing


def test_without_a_model_the_member_is_told_to_ask_an_admin_and_the_log_names_the_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RenderInputError) as refused:
        segment(tmp_path, picture(tmp_path), "the sky")
    assert str(refused.value) == (
        "the CLIPSeg model that finds a region from words is not installed on this server: "
        "ask an admin"
    )
    assert str(tmp_path / "clipseg") in caplog.text


def test_nothing_matched_is_refused(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inference.segment.MATCH_THRESHOLD", 1.01)  # no probability reaches it
    with pytest.raises(RenderInputError, match="Nothing in the picture matched 'a dragon'"):
        segment(models_dir, picture(tmp_path), "a dragon")


def test_the_segmenter_sends_transformers_logs_through_the_process(
    models_dir: Path, tmp_path: Path
) -> None:
    """A bot whose renders run on a broker's workers builds no engine, yet segments (and
    captions) with transformers: its records go through the process's handlers (redacted,
    JSON lines), errors only, not to stderr through the library's own."""
    import transformers.utils.logging

    transformers.utils.logging.enable_default_handler()  # as the library starts
    transformers.utils.logging.disable_propagation()
    load_segmenter.cache_clear()
    segment(models_dir, picture(tmp_path), "the sky")
    library = logging.getLogger("transformers")
    assert library.propagate and not library.handlers and library.level == logging.ERROR
