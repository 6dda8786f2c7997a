"""Face restoration the engine would refuse only once the job left the queue, its refusal
posted in the channel: where no face restorer is installed, or not the one named. Refused at
admission instead, privately and before anything is charged."""

from __future__ import annotations

from bot.user_errors import UserError
from inference.face_options import FACE_RESTORE, FaceOptions
from inference.face_restorers import resolve_face_restorer
from inference.registry import ModelRegistry
from inference.types import RenderInputError, RenderRequest


def asks_face_restorer(request: RenderRequest) -> bool:
    """Whether ``request`` asks for face restoration (cheap: no I/O)."""
    return bool(request.options.get(FACE_RESTORE))


def check_face_restorer(request: RenderRequest, registry: ModelRegistry) -> None:
    """Refuse (``UserError``) a face restorer ``request`` asks for that the engine would not
    find (``resolve_face_restorer``, the engine's own lookup): blocking (the restorer folders
    are walked, unless listed within seconds), so run it on a thread."""
    try:
        faces = FaceOptions.from_options(request.options)
        if faces.restore:
            resolve_face_restorer(registry, faces.restorer)
    except RenderInputError as error:
        raise UserError(f"Not rendered: {error}.") from None
