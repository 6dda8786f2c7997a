"""What the engine refused only after the queue, in the channel, is refused at admission: face
restoration with no restorer installed, or not the one named (the engine's own lookup, with
the operator's folders in the log, not in the message), and an inpaint mask that marks
nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from bot.edits import Picture, check_mask_paints
from bot.policy.engine_inputs import asks_face_restorer, check_face_restorer
from bot.requests import RequestError
from bot.user_errors import UserError
from inference.face_restorers import resolve_face_restorer
from inference.registry import ModelRegistry
from inference.types import RenderInputError, RenderRequest
from tests.support.checkpoint_files import stand_in_checkpoint


def refusal(request: RenderRequest, registry: ModelRegistry) -> str | None:
    assert asks_face_restorer(request)
    try:
        check_face_restorer(request, registry)
    except UserError as error:
        return str(error)
    return None


def test_face_restoration_needs_a_restorer_installed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(tmp_path)
    restore = RenderRequest("a cat", options={"face_restore": True})
    with caplog.at_level(logging.WARNING, logger="inference.face_restorers"):
        told = refusal(restore, registry)
    assert told == (
        "Not rendered: face restoration (--restore-faces) needs a face restorer, and none is "
        "installed here; leave it out, or ask the bot's operator to install one."
    )
    # The engine's refusal (a queued job, a broker worker without one) names no folder either:
    # the operator's log does.
    with pytest.raises(RenderInputError) as engine_refused:
        resolve_face_restorer(registry, None)
    assert "models/" not in str(engine_refused.value)
    assert "models/face_restore/, models/GFPGAN/" in caplog.text
    folder = tmp_path / "face_restore"
    folder.mkdir()
    stand_in_checkpoint(folder / "GFPGANv1.4.safetensors")
    assert refusal(restore, registry) is None
    assert refusal(RenderRequest("a cat", options={"face_restore": "gfpganV1.4"}), registry) is None
    named = RenderRequest("a cat", options={"face_restore": "CodeFormer"})
    assert refusal(named, registry) == (
        "Not rendered: there is no face restorer 'CodeFormer' here; choose one of GFPGANv1.4."
    )


def test_only_face_restoration_reads_files_at_admission() -> None:
    # A clip skip (a saved /settings value) walks no models folder before the acknowledgement.
    assert not asks_face_restorer(RenderRequest("a cat", options={"clip_skip": 2}))
    assert not asks_face_restorer(RenderRequest("a cat"))


@pytest.mark.parametrize(
    ("value", "invert", "refused"),
    [
        (0, False, "the mask is all black"),
        (127, False, "the mask is all black"),
        (128, False, None),
        (255, True, "the mask is all white, and invert repaints its black part"),
        (127, True, None),
    ],
)
def test_a_mask_that_marks_nothing_to_repaint_is_refused(
    tmp_path: Path, value: int, invert: bool, refused: str | None
) -> None:
    path = tmp_path / "mask.png"
    Image.new("L", (64, 64), value).save(path)
    mask = Picture(path, 64, 64)
    if refused is None:
        check_mask_paints(mask, invert)
    else:
        with pytest.raises(RequestError, match=refused):
            check_mask_paints(mask, invert)
