"""A missing add-on's refusal tells the member to ask an admin, never the server's folder;
the operator's log names the folder, once however often it is asked for."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inference.describe import Captioner
from inference.types import RenderFailed


def test_a_missing_captioning_model_is_told_without_its_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "blip"
    captioner = Captioner(folder)
    try:
        with caplog.at_level(logging.WARNING, logger="inference.not_installed"):
            for _ in range(2):
                with pytest.raises(RenderFailed) as refused:
                    captioner._model()
                assert str(refused.value) == (
                    "the captioning model is not installed on this server: ask an admin"
                )
    finally:
        captioner.close()
    assert caplog.messages == [
        f"the captioning model is not installed: EASEL_CAPTIONER_DIR={folder} does not exist: "
        "it needs a BLIP captioning model folder with config.json"
    ]
