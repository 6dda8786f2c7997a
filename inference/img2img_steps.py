"""How many steps a pass from a picture runs, as the web UI sets them up (docs/parity.md): pure
arithmetic, so the bot's cost estimate and the passes count the same steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Img2ImgSteps:
    """The web UI's steps of a pass from a picture: a schedule of ``schedule`` steps of which
    the last ``run`` run (from the sigma where the picture is noised)."""

    schedule: int
    run: int

    @classmethod
    def img2img(cls, steps: int, denoising: float) -> Img2ImgSteps:
        """img2img and inpaint (the web UI's default, img2img_fix_steps off), the creative
        upscale's tiles (its SD upscale script) and the faces pass (ADetailer's inpaint): the
        last ``int(denoising x steps) + 1`` steps of ``steps``, at least one at any denoising
        (diffusers would run one fewer, none below one step's worth). At denoising 1 all of
        them run, from the picture noised at the largest sigma, not from pure noise."""
        return cls(steps, min(steps, int(min(denoising, 0.999) * steps) + 1))

    @classmethod
    def hires(cls, steps: int, denoising: float, longest: int) -> Img2ImgSteps:
        """The hires pass: exactly ``steps`` steps, the end of a schedule stretched to
        ``steps / denoising`` steps, but no longer than the sampler takes (``longest``: its
        training timesteps, an LCM's 50)."""
        return cls(max(steps, min(int(steps / min(denoising, 0.999)), longest)), steps)

    @property
    def strength(self) -> float:
        """Diffusers' strength that runs the last ``run`` steps: ``int(schedule x strength)``
        is ``run`` (half a step above, clear of float rounding)."""
        return min(1.0, (self.run + 0.5) / self.schedule)
