from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inference.engine import Engine
from inference.types import RenderInputError, RenderRequest
from inference.validation import RenderLimits

PURE_MODULES = (
    "inference.validation",
    "inference.samplers",
    "inference.registry",
    "inference.presets",
    "inference.infotext",
    "inference.images",
    "inference.upscale",
    "inference.tiles",
    "bot.settings",
)


def test_checks_the_bot_uses_do_not_import_torch() -> None:
    """The bot validates requests and lists models without paying for the torch import."""
    imports = "; ".join(f"import {module}" for module in PURE_MODULES)
    check = (
        "import sys; heavy = {'torch', 'diffusers', 'transformers', 'spandrel'} & set(sys.modules)"
    )
    code = f"{imports}; {check}; print(sorted(heavy))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_server_limits_name_the_ceiling() -> None:
    limits = RenderLimits(max_pixels=512 * 512, max_steps=30)
    assert limits.refusal(RenderRequest("x", steps=30, width=512, height=512)) is None
    assert limits.refusal(RenderRequest("x", steps=31)) == (
        "this server renders at most 30 steps, got 31"
    )
    too_big = limits.refusal(RenderRequest("x", width=768, height=512))
    assert too_big == (
        "this server renders at most 262,144 pixels a picture (about 512x512); 768x512 is "
        "393,216: ask for a smaller size"
    )
    hires = RenderRequest("x", width=512, height=512, options={"hires_scale": 1.5})
    assert "768x768 is 589,824: ask for a smaller size or no hires fix" in (
        limits.refusal(hires) or ""
    )
    assert limits.refusal(RenderRequest("x")) is None  # native size: judged by the engine


def test_the_engine_applies_the_limits_once_the_size_is_known(models_dir: Path) -> None:
    engine = Engine(models_dir, limits=RenderLimits(max_pixels=48 * 48, max_steps=4))
    with pytest.raises(RenderInputError, match=r"at most 2,304 pixels a picture.*64x64 is 4,096"):
        engine.render(RenderRequest("a cat", steps=2))  # the tiny model's native 64x64
    with pytest.raises(RenderInputError, match="at most 4 steps, got 5"):
        engine.render(RenderRequest("", steps=5, mode="upscale", init_image="x.png"))
