"""Where each /imagine setting comes from: typed slash options > prompt flags > the named preset
> the member's saved /settings > the server's defaults, for every field family."""

from __future__ import annotations

from bot.presets import Preset, over_saved_settings
from bot.requests import Defaults, ImagineOptions, build_requests
from db.user_settings import UserSettings
from inference.types import RenderRequest

SAVED = UserSettings(steps=30, cfg=9.0, sampler="Euler", size="768x512", clip_skip=2)
DEFAULTS = Defaults(steps=12, cfg=6.0, sampler="Euler a")


def built(
    prompt: str,
    saved: UserSettings = SAVED,
    preset: Preset | None = None,
    **options: object,
) -> RenderRequest:
    [request] = build_requests(
        ImagineOptions(prompt, **options),  # type: ignore[arg-type]
        DEFAULTS,
        over_saved_settings(preset, saved),
    )
    return request


def test_steps() -> None:
    assert built("a cat --steps 20").steps == 20  # the bug: saved 30 won
    assert built("a cat --steps 20", steps=25).steps == 25
    assert built("a cat --steps 20", preset=Preset("p", steps=9)).steps == 20
    assert built("a cat", preset=Preset("p", steps=9)).steps == 9
    assert built("a cat").steps == 30
    assert built("a cat", saved=UserSettings()).steps == DEFAULTS.steps


def test_cfg() -> None:
    assert built("a cat --cfg 4").cfg_scale == 4.0
    assert built("a cat --cfg 4", cfg=5.0).cfg_scale == 5.0
    assert built("a cat", preset=Preset("p", cfg=3.0)).cfg_scale == 3.0
    assert built("a cat").cfg_scale == 9.0
    assert built("a cat", saved=UserSettings()).cfg_scale == DEFAULTS.cfg


def test_sampler() -> None:
    assert built('a cat --sampler "DPM++ 2M"').sampler == "DPM++ 2M"
    assert built('a cat --sampler "DPM++ 2M"', sampler="DDIM").sampler == "DDIM"
    assert built("a cat", preset=Preset("p", sampler="DDIM")).sampler == "DDIM"
    assert built("a cat").sampler == "Euler"
    assert built("a cat", saved=UserSettings()).sampler == DEFAULTS.sampler


def test_size() -> None:
    def size(request: RenderRequest) -> tuple[int | None, int | None]:
        return request.width, request.height

    assert size(built("a cat", size="512x640")) == (512, 640)
    assert size(built("a cat", preset=Preset("p", size="640x512"))) == (640, 512)
    assert size(built("a cat")) == (768, 512)
    assert size(built("a cat", saved=UserSettings())) == (None, None)  # the model's own


def test_aspect_ratio() -> None:
    typed = built("a cat --ar 16:9")
    assert (typed.width, typed.height, typed.options.get("aspect")) == (None, None, "16:9")
    assert typed.notes == []  # the saved size is no option the member typed: no conflict
    preset = built("a cat --ar 2:3", preset=Preset("p", size="640x512"))
    assert preset.options.get("aspect") == "2:3"
    option = built("a cat --ar 16:9", size="512x512")
    assert (option.width, option.height, "aspect" in option.options) == (512, 512, False)


def test_negative_and_clip_skip() -> None:
    assert built("a cat --no dogs", saved=UserSettings(negative="blurry")).negative_prompt == (
        "blurry, dogs"
    )
    assert built("a cat", preset=Preset("p", negative="grainy")).negative_prompt == "grainy"
    assert built("a cat").options["clip_skip"] == 2
    assert built("a cat", clip_skip=3).options["clip_skip"] == 3
    assert built("a cat", preset=Preset("p", clip_skip=1)).options["clip_skip"] == 1
