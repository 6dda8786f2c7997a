"""Named strengths for `/vary` and the result buttons (pure Python: the bot imports this).

Variations of an existing picture are img2img passes over it with the same prompt; the
denoising strength decides how much may change:
- subtle 0.35: composition, pose and palette stay; textures and small details move.
- strong 0.70: the layout is kept only loosely; subjects and background are redrawn.
"""

from __future__ import annotations

from inference.types import RenderInputError

VARY_STRENGTHS = {"subtle": 0.35, "strong": 0.70}


def vary_strength(choice: str | float) -> float:
    """Denoising strength for ``subtle``, ``strong`` or a number above 0 and at most 1 (0 would
    change nothing: no denoising step runs)."""
    # Told as given, never rounded: ":g" said "at most 1, got 1" of 1.0000001, "got 0" of 1e-400.
    given = repr(choice)
    if isinstance(choice, str):
        named = VARY_STRENGTHS.get(choice.strip().casefold())
        if named is not None:
            return named
        try:
            choice = float(choice)
        except ValueError:
            raise RenderInputError(
                f"vary strength must be 'subtle', 'strong' or a number above 0 and at most 1, "
                f"got {given}"
            ) from None
    if not 0.0 < choice <= 1.0:
        raise RenderInputError(f"vary strength must be above 0 and at most 1, got {given}")
    return float(choice)
