"""``/imagine control:<picture>``: the uploaded picture saved as a checked PNG and added to the
request as a ControlNet unit, refused up front when no ControlNet or preprocessor can read it."""

from __future__ import annotations

from typing import Literal, get_args

import discord

from bot.requests import RequestError
from bot.services import Services
from bot.user_errors import UserError
from cogs.edit import SavedInputs
from inference.control_units import CONTROL_TYPES, ControlUnit, with_control_units
from inference.preprocessors import check_controls
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
    if control_type is None:
        raise UserError(
            f"Say what the control picture is with `control_type` ({', '.join(CONTROL_TYPES)})."
        )
    saved = await inputs.save(picture)
    unit = ControlUnit(control_type, str(saved.path), None, weight, start, end)
    try:
        controlled = with_control_units(request, [unit])
        check_controls([unit], services.registry.models_dir)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return controlled
