"""Samplers by their Stable Diffusion web UI names, mapped onto diffusers schedulers.

Pure Python at import time (diffusers is imported only to build a scheduler) so the bot can
validate a sampler name without loading torch.

``DPM++ 2S a`` has no diffusers twin: ``inference.schedulers`` adds it, and runs ``Euler a`` and
``LCM`` on the sigma schedules diffusers' own schedulers for them cannot take. ``DPM++ SDE`` is
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

SIGMA_SCHEDULES = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}
# The web UI's "Schedule type" labels (1.9) and the scheduler flags each sets. "Automatic":
# what the sampler name says ("DPM++ 2M Karras": Karras; plain names: Uniform, the model's
# own sigmas). Polyexponential at the web UI's default rho 1 is the exponential schedule;
# SGM Uniform (evenly spaced timesteps leaving out t = 0) is diffusers' trailing spacing.
AUTOMATIC_SCHEDULE = "Automatic"
SCHEDULE_TYPES: dict[str, dict[str, Any]] = {
    AUTOMATIC_SCHEDULE: {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Polyexponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


@dataclass(frozen=True)
class SamplerSpec:
    scheduler_class: str
    flags: dict[str, Any] = field(default_factory=dict)
    # Whether the scheduler takes the Karras / Exponential sigma schedule flags.
    sigma_schedules: bool = True
    module: str = "diffusers"  # where scheduler_class lives (imported only to build one)
    # A scheduler of inference.schedulers that runs this sampler on the sigma schedules its
    # own scheduler cannot take (the web UI runs any k-diffusion sampler on any schedule).
    sigma_schedules_by: str | None = None
    # Model calls per step (the scheduler's ``order``): a second-order sampler's prompts are
    # planned over its calls, as the web UI's (``build_plan``); known without diffusers, so the
    # bot plans at submit what the engine renders.
    calls_per_step: int = 1

    def scheduler_type(self) -> type[SchedulerMixin]:
        scheduler_type: type[SchedulerMixin] = getattr(
            importlib.import_module(self.module), self.scheduler_class
        )
        return scheduler_type


# k-diffusion's samplers (the web UI's) step through the model's own sigmas at timesteps
# spread evenly from the last to the first (T-1 ... 0), whatever the model's config says.
_K_DIFFUSION = {"timestep_spacing": "linspace"}
_DPM_SOLVER_PP_2 = {**_K_DIFFUSION, "algorithm_type": "dpmsolver++", "solver_order": 2}
_SDE_DPM_SOLVER_PP_2 = {**_K_DIFFUSION, "algorithm_type": "sde-dpmsolver++", "solver_order": 2}

BASE_SAMPLERS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec(
        "EulerAncestralDiscreteScheduler",
        _K_DIFFUSION,
        sigma_schedules=False,
        sigma_schedules_by="EulerAncestralScheduler",
    ),
    "Euler": SamplerSpec("EulerDiscreteScheduler", _K_DIFFUSION),
    "LMS": SamplerSpec("LMSDiscreteScheduler", _K_DIFFUSION),
    "Heun": SamplerSpec("HeunDiscreteScheduler", _K_DIFFUSION, calls_per_step=2),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler", _K_DIFFUSION, calls_per_step=2),
    "DPM2 a": SamplerSpec("KDPM2AncestralDiscreteScheduler", _K_DIFFUSION, calls_per_step=2),
    "DPM++ 2S a": SamplerSpec(
        "DPMSolverPlusPlus2SAncestralScheduler",
        _K_DIFFUSION,
        module="inference.schedulers",
        calls_per_step=2,
    ),
    "DPM++ 2M": SamplerSpec(
        "KDiffusionMultistepScheduler", _DPM_SOLVER_PP_2, module="inference.schedulers"
    ),
    "DPM++ SDE": SamplerSpec("DPMSolverSDEScheduler", _K_DIFFUSION, calls_per_step=2),
    "DPM++ 2M SDE": SamplerSpec(
        "KDiffusionMultistepScheduler", _SDE_DPM_SOLVER_PP_2, module="inference.schedulers"
    ),
    # The web UI's DDIM timesteps; SD was trained without sample clipping.
    "DDIM": SamplerSpec(
        "WebUIDDIMScheduler",
        {"clip_sample": False, "set_alpha_to_one": False},
        sigma_schedules=False,
        module="inference.schedulers",
    ),
    "UniPC": SamplerSpec("UniPCMultistepScheduler"),
    # The web UI's LCM (uniform over the 50 LCM timesteps); an LCM-distilled model's own
    # sampler is diffusers' (make_scheduler's ``distilled_lcm``).
    "LCM": SamplerSpec(
        "LCMSigmasScheduler",
        dict.fromkeys(SIGMA_SCHEDULES.values(), False),
        sigma_schedules=False,
        module="inference.schedulers",
        sigma_schedules_by="LCMSigmasScheduler",
    ),
}
# Diffusers' LCM scheduler: its own timesteps over the 50 an LCM was distilled on.
DISTILLED_LCM = SamplerSpec("LCMScheduler", sigma_schedules=False)


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


def canonical_schedule_type(name: str) -> str:
    """The web UI label of schedule type ``name`` (case and spacing are forgiven)."""
    folded = " ".join(name.casefold().split())
    for label in SCHEDULE_TYPES:
        if label.casefold() == folded:
            return label
    raise RenderInputError(
        f"unknown schedule type {name!r}; choose one of: {', '.join(SCHEDULE_TYPES)}"
    )


def split_sampler(name: str, schedule_type: str = AUTOMATIC_SCHEDULE) -> tuple[str, str]:
    """The web UI 1.9 pair (sampler, schedule type) for Easel's ``name`` and
    ``schedule_type``: "DPM++ 2M Karras" is ("DPM++ 2M", "Karras")."""
    canonical = canonical_sampler_name(name)
    schedule = canonical_schedule_type(schedule_type)
    for suffix in SIGMA_SCHEDULES:
        if canonical.endswith(f" {suffix}"):
            base = canonical.removesuffix(f" {suffix}")
            return base, suffix if schedule == AUTOMATIC_SCHEDULE else schedule
    return canonical, schedule


def scheduler_spec(name: str, schedule_type: str = AUTOMATIC_SCHEDULE) -> SamplerSpec:
    """The scheduler for sampler ``name`` with its sigmas spaced by ``schedule_type`` (a web
    UI label; "Automatic": as the name says), refusing a schedule the sampler cannot take."""
    requested = canonical_schedule_type(schedule_type)
    spec = SAMPLERS[canonical_sampler_name(name)]
    if requested == AUTOMATIC_SCHEDULE:
        return spec
    base, _ = split_sampler(name)
    if spec.sigma_schedules:
        return dataclasses.replace(
            spec, flags={**SAMPLERS[base].flags, **SCHEDULE_TYPES[requested]}
        )
    sigma_flags = SCHEDULE_TYPES[requested].keys() & SIGMA_SCHEDULES.values()
    if spec.sigma_schedules_by is not None and sigma_flags:
        # k-diffusion's sampler: every sigma flag set (a model's own config may carry another
        # one), this one on.
        flags = {**_K_DIFFUSION, **dict.fromkeys(SIGMA_SCHEDULES.values(), False)}
        return dataclasses.replace(
            spec,
            scheduler_class=spec.sigma_schedules_by,
            module="inference.schedulers",
            flags={**flags, **SCHEDULE_TYPES[requested]},
        )
    # Without a sigma choice the spacing of the timesteps is all a k-diffusion sampler takes.
    accepted = [AUTOMATIC_SCHEDULE, "Uniform"]
    if "timestep_spacing" in spec.flags:
        accepted.append("SGM Uniform")
    if spec.sigma_schedules_by is not None:
        accepted += [
            label
            for label, flags in SCHEDULE_TYPES.items()
            if flags.keys() & SIGMA_SCHEDULES.values()
        ]
    if requested not in accepted:
        raise RenderInputError(
            f"the {base} sampler cannot use the {requested} schedule; "
            f"choose one of: {', '.join(accepted)}"
        )
    if requested == "SGM Uniform":
        return dataclasses.replace(spec, flags={**spec.flags, **SCHEDULE_TYPES[requested]})
    return spec


def calls_per_step(name: str, schedule_type: str = AUTOMATIC_SCHEDULE) -> int:
    """The model calls each step of sampler ``name`` makes (its scheduler's ``order``)."""
    return scheduler_spec(name, schedule_type).calls_per_step


def make_scheduler(
    name: str,
    model_scheduler_config: Mapping[str, Any],
    schedule_type: str = AUTOMATIC_SCHEDULE,
    distilled_lcm: bool = False,
) -> SchedulerMixin:
    """A fresh scheduler for ``name`` and ``schedule_type`` on the model's own noise schedule.
    ``distilled_lcm``: the model is an LCM, whose plain LCM sampler is its own (diffusers')."""
    spec = scheduler_spec(name, schedule_type)
    sampler, schedule = split_sampler(name, schedule_type)
    if distilled_lcm and sampler == "LCM" and schedule in (AUTOMATIC_SCHEDULE, "Uniform"):
        spec = DISTILLED_LCM
    scheduler: SchedulerMixin = spec.scheduler_type().from_config(
        dict(model_scheduler_config), **spec.flags
    )
    return scheduler
