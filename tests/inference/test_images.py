from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.images import (
    CropBox,
    fill_masked_area,
    load_input_image,
    masked_region,
    prepare_mask,
)
from inference.presets import vary_strength
from inference.types import RenderInputError


def test_loads_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (16, 16), 80).save(path)
    image = load_input_image(path, "init image")
    assert (image.mode, image.size) == ("RGB", (16, 16))


def test_refuses_non_images_and_other_formats(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(RenderInputError, match="init image is not a readable image"):
        load_input_image(text, "init image")
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (16, 16)).save(gif)
    with pytest.raises(RenderInputError, match="must be one of PNG, JPEG, WEBP, got GIF"):
        load_input_image(gif, "init image")


def test_a_jpeg_with_a_multi_picture_index_is_read_as_its_first_picture(tmp_path: Path) -> None:
    """Some phones and cameras save one (Pillow opens it as "MPO"); the CLI reads it as is."""
    path = tmp_path / "phone.jpg"
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (32, 32), "blue")
    first.save(path, format="MPO", save_all=True, append_images=[second])
    image = load_input_image(path, "init image")
    red, _, blue = np.asarray(image).mean(axis=(0, 1))
    assert image.size == (64, 48) and red > 200 and blue < 50


def test_refuses_oversized_pictures_from_the_header(tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    Image.new("L", (5000, 8)).save(wide)
    with pytest.raises(RenderInputError, match="between 8 and 4096 pixels on each side"):
        load_input_image(wide, "mask image")


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    # Make the file a "bomb" by lowering PIL's limit rather than writing a huge file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(RenderInputError, match="too large to decode safely"):
        load_input_image(path, "init image")


def test_mask_is_binarised_inverted_and_blurred() -> None:
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=200)
    sharp = np.asarray(prepare_mask(mask, (32, 32), blur=0, invert=False))
    assert set(np.unique(sharp)) == {0, 255}
    inverted = np.asarray(prepare_mask(mask, (32, 32), blur=0, invert=True))
    assert np.array_equal(inverted, 255 - sharp)
    soft = np.asarray(prepare_mask(mask, (32, 32), blur=2, invert=False))
    assert 0 < soft[16, 7] < 255


def test_fill_uses_the_colours_around_the_hole() -> None:
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((32, 0, 63, 31), fill=(255, 0, 0))
    hole = Image.new("L", (64, 32), 0)
    ImageDraw.Draw(hole).rectangle((24, 8, 39, 23), fill=255)
    filled = np.asarray(fill_masked_area(image, hole))
    assert tuple(filled[16, 25]) == (0, 0, 255)  # near the blue side
    assert tuple(filled[16, 38]) == (255, 0, 0)  # near the red side
    assert np.array_equal(filled[:8], np.asarray(image)[:8])  # outside the hole untouched


def test_masked_region_pads_and_matches_aspect() -> None:
    mask = Image.new("L", (200, 100), 0)
    ImageDraw.Draw(mask).rectangle((90, 40, 109, 59), fill=255)
    box = masked_region(mask, padding=10, target_size=(64, 64))
    assert box == CropBox(80, 30, 120, 70)
    wide = masked_region(mask, padding=10, target_size=(128, 64))
    assert wide is not None and wide.size == (80, 40)
    assert masked_region(Image.new("L", (8, 8)), 4, (64, 64)) is None


def test_vary_presets() -> None:
    assert vary_strength("subtle") < vary_strength("Strong") <= 1
    assert vary_strength("0.5") == vary_strength(0.5) == 0.5
    # One range in both sentences, the one the option's description gives.
    with pytest.raises(RenderInputError, match="'strong' or a number above 0 and at most 1, got"):
        vary_strength("wild")
    with pytest.raises(RenderInputError, match=r"above 0 and at most 1, got 0"):
        vary_strength(0)
    with pytest.raises(RenderInputError, match=r"above 0 and at most 1, got 1\.5"):
        vary_strength(1.5)
