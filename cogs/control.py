"""``/imagine control:<picture>``: the uploaded picture added to the request as a ControlNet
unit, refused up front when no ControlNet or preprocessor can read it, and saved as a checked
PNG once the command was acknowledged (``SavedInputs.saved_later``)."""

from __future__ import annotations

import asyncio
import functools
from typing import Literal, get_args

import discord

from bot.images import check_upload_size
from bot.requests import RequestError
from bot.services import Services
from bot.user_errors import UserError
from cogs.edit import SavedInputs
from inference.control_units import (
    CONTROL_TYPES,
    ControlUnit,
    check_control_models,
    with_control_units,
)
from inference.preprocessors import check_preprocessor
from inference.types import RenderInputError, RenderRequest

ControlType = Literal["canny", "tile", "lineart", "softedge", "depth", "openpose", "none"]
assert set(get_args(ControlType)) == set(CONTROL_TYPES)  # the slash choices follow the engine


async def with_control_picture(
    request: RenderRequest,
    inputs: SavedInputs,
    services: Services,
    picture: discord.Attachment,
    control_type: str | None,
    weight: float,
    start: float,
    end: float,
) -> RenderRequest:
    """``request`` steered by ``picture``, which ``inputs`` saves later (its path named now)."""
    if control_type is None:
        raise UserError(
            f"Say what the control picture is with `control_type` ({', '.join(CONTROL_TYPES)})."
        )
    check_upload_size(picture.filename, picture.size)  # by what Discord says of it
    path = inputs.fresh_path()
    unit = ControlUnit(control_type, str(path), None, weight, start, end)
    try:
        controlled = with_control_units(request, [unit])
        # Not ``check_controls``: the picture, not read yet, is decoded and checked when saved.
        # On a thread, as an admission reads LoRAs: a new ControlNet file's header is read.
        await asyncio.to_thread(_check_installed, unit, services)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    inputs.save_later(functools.partial(inputs.save, picture, path=path))
    return controlled


def _check_installed(unit: ControlUnit, services: Services) -> None:
    """``RenderInputError`` unless ``unit``'s ControlNet and annotator are installed and
    whole (folder listings, header reads: off the event loop)."""
    check_control_models([unit], services.registry)
    check_preprocessor(unit, services.registry.models_dir)
