"""Samplers by their Stable Diffusion web UI names, mapped onto diffusers schedulers.

Pure Python at import time (diffusers is imported only to build a scheduler) so the bot can
validate a sampler name without loading torch.

``DPM++ 2S a`` has no diffusers twin: ``inference.schedulers`` adds it. ``DPM++ SDE`` is
k-diffusion's sampler ported by diffusers, with its Brownian-tree noise (torchsde) seeded per
picture by the engine.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inference.types import RenderInputError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

DEFAULT_SAMPLER = "Euler a"
SIGMA_SCHEDULES = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str
    flags: dict[str, Any] = field(default_factory=dict)
    # Whether the scheduler takes the Karras / Exponential sigma schedule flags.
    sigma_schedules: bool = True
    module: str = "diffusers"  # where scheduler_class lives (imported only to build one)

    def scheduler_type(self) -> type[SchedulerMixin]:
        scheduler_type: type[SchedulerMixin] = getattr(
            importlib.import_module(self.module), self.scheduler_class
        )
        return scheduler_type


_DPM_SOLVER_PP_2 = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_SDE_DPM_SOLVER_PP_2 = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

BASE_SAMPLERS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec("EulerAncestralDiscreteScheduler", sigma_schedules=False),
    "Euler": SamplerSpec("EulerDiscreteScheduler"),
    "LMS": SamplerSpec("LMSDiscreteScheduler"),
    "Heun": SamplerSpec("HeunDiscreteScheduler"),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler"),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "DPM++ 2S a": SamplerSpec(
        "DPMSolverPlusPlus2SAncestralScheduler", module="inference.schedulers"
    ),
    "DPM++ 2M": SamplerSpec("DPMSolverMultistepScheduler", _DPM_SOLVER_PP_2),
    "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler"),
    "DPM++ 2M SDE": SamplerSpec("DPMSolverMultistepScheduler", _SDE_DPM_SOLVER_PP_2),
    # SD was trained without sample clipping and with alpha_prod at t=0 below one.
    "DDIM": SamplerSpec(
        "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, sigma_schedules=False
    ),
    "UniPC": SamplerSpec("UniPCMultistepScheduler"),
    "LCM": SamplerSpec("LCMScheduler", sigma_schedules=False),
}


def _all_samplers() -> dict[str, SamplerSpec]:
    samplers: dict[str, SamplerSpec] = {}
    for name, spec in BASE_SAMPLERS.items():
        if not spec.sigma_schedules:
            samplers[name] = spec
            continue
        # Plain names reset every sigma-schedule flag a model's own config may carry.
        samplers[name] = dataclasses.replace(
            spec, flags={**spec.flags, **dict.fromkeys(SIGMA_SCHEDULES.values(), False)}
        )
        for schedule, flag in SIGMA_SCHEDULES.items():
            samplers[f"{name} {schedule}"] = dataclasses.replace(
                spec, flags={**samplers[name].flags, flag: True}
            )
    return samplers


SAMPLERS: dict[str, SamplerSpec] = _all_samplers()
_BY_FOLDED_NAME = {" ".join(name.casefold().split()): name for name in SAMPLERS}


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def canonical_sampler_name(name: str) -> str:
    """The web UI spelling of ``name`` (case and spacing are forgiven)."""
    canonical = _BY_FOLDED_NAME.get(" ".join(name.casefold().split()))
    if canonical is None:
        raise RenderInputError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return canonical


def make_scheduler(name: str, model_scheduler_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler for ``name`` built on the model's own noise schedule."""
    spec = SAMPLERS[canonical_sampler_name(name)]
    scheduler: SchedulerMixin = spec.scheduler_type().from_config(
        dict(model_scheduler_config), **spec.flags
    )
    return scheduler
