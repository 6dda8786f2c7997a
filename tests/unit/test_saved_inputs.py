"""A command's uploads (``cogs.edit.SavedInputs``) are decoded once each, on a thread, for the
pixel check and the stored PNG together; those held for after the acknowledgement are saved
at once, and a refusal of one leaves none of them on disk."""

from __future__ import annotations

import asyncio
import functools
import io
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from bot.picture_work import PictureWork
from bot.user_errors import UserError
from cogs.edit import SavedInputs

GUILD, MEMBER = 5, 7


def jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def uploading(inputs_dir: Path) -> Any:
    """A member's interaction in a server none of whose jobs has the upload's pixels."""

    async def no_jobs(guild_id: int, digest: bytes) -> list[object]:
        return []

    services = SimpleNamespace(
        inputs_dir=inputs_dir,
        history=SimpleNamespace(jobs_with_picture=no_jobs),
        picture_work=PictureWork(),
    )
    return SimpleNamespace(
        guild_id=GUILD, user=SimpleNamespace(id=MEMBER), client=SimpleNamespace(services=services)
    )


class Upload:
    """An attachment whose download waits until ``together`` others are downloading too."""

    def __init__(self, filename: str, data: bytes, together: asyncio.Barrier) -> None:
        self.filename, self.size, self._data, self._together = filename, len(data), data, together

    async def read(self) -> bytes:
        await self._together.wait()
        return self._data


def held_saves(inputs: SavedInputs, uploads: Any) -> list[Path]:
    """Each upload's save, held until ``saved_later``; the paths they are saved to."""
    paths = [inputs.fresh_path() for _ in uploads]
    for upload, path in zip(uploads, paths, strict=True):
        inputs.save_later(functools.partial(inputs.save, upload, path=path))
    return paths


async def test_an_upload_is_decoded_once_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded_on: list[int] = []
    load_prepare = ImageFile.ImageFile.load_prepare

    def counted(image: ImageFile.ImageFile) -> None:
        decoded_on.append(threading.get_ident())
        load_prepare(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", counted)
    async with SavedInputs(uploading(tmp_path)) as inputs:
        picture = await inputs.save_data("photo.jpg", jpeg())
        inputs.keep()
    assert (picture.width, picture.height) == (64, 48)
    with Image.open(picture.path) as stored:
        assert stored.format == "PNG"
    assert len(decoded_on) == 1
    assert decoded_on[0] != threading.get_ident()


async def test_a_commands_uploads_are_saved_at_once_and_a_refusal_keeps_none(
    tmp_path: Path,
) -> None:
    together = asyncio.Barrier(2)
    uploads: Any = [Upload("a.jpg", jpeg(), together), Upload("b.jpg", jpeg(), together)]
    async with asyncio.timeout(10), SavedInputs(uploading(tmp_path)) as inputs:
        paths = held_saves(inputs, uploads)
        # One after another would never pass the barrier.
        await inputs.saved_later()
        inputs.keep()
    assert [path.exists() for path in paths] == [True, True]

    together = asyncio.Barrier(2)
    uploads = [Upload("a.jpg", jpeg(), together), Upload("b.gif", b"GIF89a", together)]
    with pytest.raises(UserError, match=r"'b\.gif'"):
        async with asyncio.timeout(10), SavedInputs(uploading(tmp_path / "refused")) as inputs:
            held_saves(inputs, uploads)
            await inputs.saved_later()
    assert not any((tmp_path / "refused").glob("*.png"))
