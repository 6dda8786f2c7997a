"""The captioner reads a picture as it is shown: turned by its EXIF orientation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from inference.describe import Captioner
from inference.tiny import write_tiny_captioner
from inference.types import RenderFailed
from tests.inference.conftest import mapped_under


class RecordingProcessor:
    """Stands in for BLIP's processor: records the picture it is given."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, images: Image.Image, return_tensors: str) -> dict[str, Any]:
        self.sizes.append(images.size)
        return {}

    def decode(self, output: object, skip_special_tokens: bool) -> str:
        return "a phone photo"


class OneCaptionModel:
    def generate(self, **_: object) -> list[int]:
        return [0]


def test_the_captioner_reads_a_phone_photo_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "orange").save(buffer, format="JPEG", exif=exif.tobytes())
    processor = RecordingProcessor()
    captioner = Captioner(tmp_path)
    captioner._loaded = (processor, OneCaptionModel())  # no model files: the reading is tested
    try:
        assert captioner._describe(buffer.getvalue()) == ["a phone photo"]
    finally:
        captioner.close()
    assert processor.sizes == [(20, 40)]


def test_a_cut_short_jpeg_is_a_reason_for_the_member_not_an_internal_error(
    tmp_path: Path,
) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="JPEG")
    captioner = Captioner(tmp_path)
    captioner._loaded = (RecordingProcessor(), OneCaptionModel())
    try:
        with pytest.raises(RenderFailed, match="cut short or damaged"):
            captioner._describe(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    finally:
        captioner.close()


def test_the_loaded_captioner_keeps_no_file_of_its_own_mapped(tmp_path: Path) -> None:
    """Its weights are copied out of the file as it loads: a ``cp`` over the model while the
    bot runs cannot end the process with a bus error at the next /describe."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "orange").save(buffer, format="PNG")
    captioner = Captioner(write_tiny_captioner(tmp_path / "captioner"))
    try:
        assert captioner._describe(buffer.getvalue())
    finally:
        captioner.close()
    assert mapped_under(tmp_path) == set()
