"""The web UI's "Refiner" and "Refiner switch at": an SDXL refiner checkpoint finishes the last
part of a txt2img schedule that the SDXL base model started.

Pure Python (no torch), so the bot and the CLI refuse a bad request up front; the pass itself
is ``inference.passes.refine``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference.metadata import FAMILY_NAMES, checkpoint_family
from inference.registry import ModelRegistry
from inference.types import RenderInputError

DEFAULT_SWITCH = 0.8
MIN_SWITCH = 0.01
MAX_SWITCH = 0.99


@dataclass(frozen=True)
class RefinerOptions:
    """The refiner a request names and the fraction of the schedule the base model runs."""

    model: str
    switch: float = DEFAULT_SWITCH

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RefinerOptions | None:
        """The request's refiner, or None; ``RenderInputError`` for a switch out of range or
        a switch with no refiner named."""
        model = options.get("refiner")
        switch = options.get("refiner_switch")
        if not model:
            if switch is not None:
                raise RenderInputError("refiner switch needs a refiner model (refiner:NAME)")
            return None
        if switch is None:
            return cls(str(model))
        if isinstance(switch, bool) or not isinstance(switch, int | float):
            raise RenderInputError(f"refiner switch must be a number, got {switch!r}")
        if not MIN_SWITCH <= switch <= MAX_SWITCH:
            raise RenderInputError(
                f"refiner switch must be between {MIN_SWITCH:g} and {MAX_SWITCH:g} (the part of "
                f"the steps the base model runs), got {switch!r}"
            )
        return cls(str(model), float(switch))

    def infotext(self, short_hash: str) -> dict[str, object]:
        """The web UI's fields: ``Refiner: NAME [hash], Refiner switch at: 0.8``."""
        return {"Refiner": f"{self.model} [{short_hash}]", "Refiner switch at": self.switch}

    def refiner_steps(self, steps: int) -> int:
        """About how many of ``steps`` the refiner runs (a progress estimate)."""
        return steps - round(steps * self.switch)


def check_refiner_request(mode: str, options: Mapping[str, Any]) -> RefinerOptions | None:
    """The refiner options, refused with one sentence where a refiner cannot take part."""
    refiner = RefinerOptions.from_options(options)
    if refiner is None:
        return None
    if mode != "txt2img":
        raise RenderInputError(f"a refiner finishes txt2img pictures, not {mode}")
    if options.get("hires_scale") is not None:
        raise RenderInputError("a refiner and the hires fix do not combine here: choose one")
    if options.get("stop") is not None:
        raise RenderInputError("a refiner and --stop do not combine: choose one")
    return refiner


def refiner_names(registry: ModelRegistry) -> list[str]:
    """The installed SDXL refiners (told from their tensors or configs, never loaded)."""
    return [
        name
        for name, entry in sorted(registry.loadable().items())
        if checkpoint_family(entry) == FAMILY_NAMES["sdxl-refiner"]
    ]
