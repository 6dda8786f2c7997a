"""Each model family's defaults (Flux schnell renders 4 steps, Flux dev distilled guidance
3.5, SD3.5 its model card's steps and CFG) fill only what nobody chose: an option, a prompt
flag, a preset and the member's /settings all beat them, and they beat the server's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.presets import Preset, over_saved_settings
from bot.requests import Defaults, ImagineOptions, build_request, build_requests
from db.user_settings import UserSettings
from inference.flow_detect import FAMILY_DEFAULTS
from inference.metadata import checkpoint_family
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_model

SERVER = Defaults(steps=20, cfg=7.0, sampler="Euler a")
SCHNELL = Defaults(steps=4, cfg=1.0, sampler="Euler")


def defaults_by_model(model: str | None) -> Defaults:
    """Schnell's defaults for ``schnell`` and for the default model (None), else the server's."""
    return SCHNELL if model in (None, "schnell") else SERVER


def built(prompt: str, preset: Preset | None = None, **options: Any) -> tuple[object, ...]:
    (request,) = build_requests(
        ImagineOptions(prompt=prompt, **options),
        SERVER,
        preset,
        defaults_by_model,
    )
    return request.steps, request.cfg_scale, request.sampler


def test_the_family_fills_what_nobody_chose() -> None:
    assert built("a cat") == (4, 1.0, "Euler")
    assert built("a cat", model="sd") == (20, 7.0, "Euler a")
    # The model named by a flag or a preset is the one whose family counts.
    assert built("a cat --model sd") == (20, 7.0, "Euler a")
    assert built("a cat", Preset("p", model="sd")) == (20, 7.0, "Euler a")


@pytest.mark.parametrize(
    ("prompt", "options", "preset", "expected"),
    [
        ("a cat", {"steps": 9, "cfg": 2.0, "sampler": "UniPC"}, None, (9, 2.0, "UniPC")),
        ("a cat --steps 8 --cfg 3 --sampler UniPC", {}, None, (8, 3.0, "UniPC")),
        ("a cat", {}, Preset("p", steps=7, cfg=2.5, sampler="DPM++ 2M"), (7, 2.5, "DPM++ 2M")),
        ("a cat", {}, Preset("p", steps=6), (6, 1.0, "Euler")),
    ],
)
def test_anything_chosen_beats_the_family(
    prompt: str, options: dict[str, Any], preset: Preset | None, expected: tuple[object, ...]
) -> None:
    assert built(prompt, preset, **options) == expected


def test_a_single_request_takes_the_family_too() -> None:
    """/describe's buttons and ``easel render`` build one request, not a --repeat list."""
    request = build_request(ImagineOptions(prompt="a cat"), SERVER, None, defaults_by_model)
    assert (request.steps, request.cfg_scale, request.sampler) == (4, 1.0, "Euler")
    request = build_request(
        ImagineOptions(prompt="a cat --model sd"), SERVER, None, defaults_by_model
    )
    assert (request.steps, request.cfg_scale, request.sampler) == (20, 7.0, "Euler a")


def test_saved_settings_beat_the_family() -> None:
    saved = UserSettings(steps=12, cfg=None, sampler="UniPC", private_results=False)
    assert built("a cat", over_saved_settings(None, saved)) == (12, 1.0, "UniPC")


def test_every_flow_family_a_model_list_names_has_defaults(tmp_path: Path) -> None:
    for family in ("sd3", "flux", "flux-schnell"):
        write_tiny_model(tmp_path / family, family=family)
    labels = {checkpoint_family(e) for e in ModelRegistry(tmp_path).scan().values()}
    assert labels == {"SD 3", "Flux dev", "Flux schnell"} and labels <= set(FAMILY_DEFAULTS)
    assert (FAMILY_DEFAULTS["Flux schnell"].steps, FAMILY_DEFAULTS["Flux dev"].cfg) == (4, 3.5)
