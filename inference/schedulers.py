"""Samplers diffusers does not ship, written as diffusers schedulers.

``DPMSolverPlusPlus2SAncestralScheduler`` is the web UI's "DPM++ 2S a" (k-diffusion's
``sample_dpmpp_2s_ancestral``): per step, one DPM-Solver++ half step to the geometric middle
of sigma and the ancestral step's sigma_down, a second model call there, the full
DPM-Solver++(2S) step to sigma_down, then fresh noise of size sigma_up. Its sigma schedule,
midpoints and model-call bookkeeping are exactly those of diffusers' DPM2 a scheduler, so it
inherits them and only replaces the update.

``EulerAncestralScheduler`` is the web UI's "Euler a" (k-diffusion's
``sample_euler_ancestral``) on any sigma schedule: diffusers' own ancestral Euler takes no
Karras / exponential flags, its plain Euler does, so the ancestral step goes on the plain one.

``LCMSigmasScheduler`` is the web UI's "LCM" (k-diffusion's ``sample_lcm``) on its uniform or a
chosen sigma schedule: its LCM denoiser reads the model at the 50 timesteps an LCM was distilled
on, with the LCM boundary scalings.

``WebUIDDIMScheduler`` is the web UI's DDIM, whose timesteps differ from diffusers' own;
``KDiffusionMultistepScheduler`` gives DPM++ 2M (SDE) k-diffusion's uniform schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_euler_discrete import (
    EulerDiscreteScheduler,
    EulerDiscreteSchedulerOutput,
)
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import (
    KDPM2AncestralDiscreteScheduler,
    KDPM2AncestralDiscreteSchedulerOutput,
)
from diffusers.utils.torch_utils import randn_tensor


class DPMSolverPlusPlus2SAncestralScheduler(KDPM2AncestralDiscreteScheduler):
    """DPM++ 2S a: two model calls per step (``order`` 2), ancestral noise each step."""

    def step(
        self,
        model_output: torch.Tensor | np.ndarray,
        timestep: float | torch.Tensor,
        sample: torch.Tensor | np.ndarray,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        model_output, sample = torch.as_tensor(model_output), torch.as_tensor(sample)
        if self.step_index is None:
            self._init_step_index(timestep)
        step_index = self.step_index
        assert step_index is not None  # _init_step_index set it
        first_call = self.state_in_first_order
        # The schedule is interleaved: the second call of a step reads the previous entry.
        index = step_index if first_call else step_index - 1
        sigma = self.sigmas[index]
        sigma_mid = self.sigmas_interpol[index]  # sqrt(sigma * sigma_down): 0 on the last step
        sigma_down, sigma_up = self.sigmas_down[index], self.sigmas_up[index]
        denoised = _denoised(
            self.config["prediction_type"],
            model_output,
            sample,
            sigma if first_call else sigma_mid,
        )
        if first_call:
            self.sample = sample  # type: ignore[assignment]  # diffusers types it as None only
            if sigma_mid == 0:  # the last step goes to sigma 0: the prediction itself
                prev_sample = denoised
            else:
                # DPM-Solver++ first order to the midpoint: exp(-h/2) = sigma_mid / sigma.
                ratio = sigma_mid / sigma
                prev_sample = ratio * sample + (1 - ratio) * denoised
        else:
            sample, self.sample = self.sample, None  # type: ignore[assignment]
            # From the step's start to sigma_down with the midpoint's prediction.
            ratio = sigma_down / sigma
            prev_sample = ratio * sample + (1 - ratio) * denoised
            prev_sample = prev_sample + _noise_like(model_output, generator) * sigma_up
        self._step_index = step_index + 1  # type: ignore[assignment]
        if not return_dict:
            return (prev_sample, denoised)
        return KDPM2AncestralDiscreteSchedulerOutput(
            prev_sample=prev_sample, pred_original_sample=denoised
        )


class _NoisySigmaStep(EulerDiscreteScheduler):
    """What Euler a and LCM on a schedule type share: a step from the plain Euler scheduler's
    sigmas (any schedule type), computed in full precision as diffusers does, that ends with
    fresh noise; each says in ``_move`` where the sample goes and how much noise it gets."""

    def _move(
        self,
        sample: torch.Tensor,
        denoised: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        step_index: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the sample before the noise, the clean prediction reported, the noise's size)"""
        raise NotImplementedError

    def step(  # type: ignore[override]  # no churn arguments: these steps have none
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> Any:
        if self.step_index is None:
            self._init_step_index(timestep)
        step_index = self.step_index
        assert step_index is not None  # _init_step_index set it
        sigma, sigma_next = self.sigmas[step_index], self.sigmas[step_index + 1]
        sample = sample.to(torch.float32)
        denoised = _denoised(self.config["prediction_type"], model_output, sample, sigma)
        moved, denoised, noise_size = self._move(sample, denoised, sigma, sigma_next, step_index)
        # Drawn on the last step too (of size 0), so the generators move on as diffusers' do.
        noise = _noise_like(model_output, generator)
        prev_sample = (moved + noise * noise_size).to(model_output.dtype)
        self._step_index = step_index + 1  # type: ignore[assignment]
        if not return_dict:
            return (prev_sample, denoised)
        return EulerDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)


class EulerAncestralScheduler(_NoisySigmaStep):
    """Euler a on any schedule type: per step, an Euler step to sigma_down, then fresh noise of
    size sigma_up, where sigma_down² + sigma_up² = sigma_next² and sigma_up² = sigma_next²
    (sigma² - sigma_next²) / sigma² (eta 1). On the uniform schedule it is bit for bit
    diffusers' EulerAncestralDiscreteScheduler."""

    def _move(
        self,
        sample: torch.Tensor,
        denoised: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        step_index: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        return sample + (sample - denoised) / sigma * (sigma_down - sigma), denoised, sigma_up


# The web UI's LCM: the timesteps an LCM was distilled on (T // 50 apart, ending at T - 1), and
# the consistency model's boundary scalings (sigma_data 0.5, timesteps scaled by 10).
_LCM_ORIGINAL_STEPS = 50
_LCM_SIGMA_DATA = 0.5
_LCM_TIMESTEP_SCALING = 10.0


class LCMSigmasScheduler(_NoisySigmaStep):
    """LCM on the model's sigmas at the 50 LCM timesteps: uniform (k-diffusion's, evenly over
    those 50 from the largest, interpolated in log sigma) or the Karras / exponential
    schedule between their smallest and largest; each sigma is read at the nearest of those
    timesteps. Per step: the boundary-scaled prediction of the clean latents, plus fresh
    noise of the next sigma (k-diffusion's ``sample_lcm``)."""

    def set_timesteps(  # type: ignore[override]  # only the step count: no custom schedules
        self, num_inference_steps: int, device: str | torch.device | None = None
    ) -> None:
        config = self.config
        train_steps = config["num_train_timesteps"]
        skip = train_steps // _LCM_ORIGINAL_STEPS
        lcm_timesteps = torch.arange(_LCM_ORIGINAL_STEPS) * skip + skip - 1
        alphas = self.alphas_cumprod[lcm_timesteps]
        log_table = (((1 - alphas) / alphas) ** 0.5).log()
        in_sigmas = log_table.exp().flip(0)  # from the largest to the smallest
        if config["use_karras_sigmas"]:
            spaced = self._convert_to_karras(in_sigmas, num_inference_steps)
        elif config["use_exponential_sigmas"]:
            spaced = self._convert_to_exponential(in_sigmas, num_inference_steps)
        else:
            at = torch.linspace(_LCM_ORIGINAL_STEPS - 1, 0, num_inference_steps)
            low, high, weight = at.floor().long(), at.ceil().long(), at.frac()
            spaced = ((1 - weight) * log_table[low] + weight * log_table[high]).exp()
        sigmas = torch.from_numpy(np.asarray(spaced, dtype=np.float32))
        nearest = (sigmas.log()[:, None] - log_table[None, :]).abs().argmin(dim=1)
        self.num_inference_steps = num_inference_steps  # type: ignore[assignment]
        self.timesteps = lcm_timesteps[nearest].to(torch.float32).to(device)
        self.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
        self._step_index = None
        # From the first step (an img2img pipeline sets its own): a schedule can read the same
        # LCM timestep twice (the first two from 59 Karras steps), so a step is not found by
        # its timestep.
        self.set_begin_index(0)

    def _move(
        self,
        sample: torch.Tensor,
        denoised: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        step_index: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scaled = float(self.timesteps[step_index]) * _LCM_TIMESTEP_SCALING
        c_skip = _LCM_SIGMA_DATA**2 / (scaled**2 + _LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + _LCM_SIGMA_DATA**2) ** 0.5
        boundary = c_out * denoised + c_skip * sample
        return boundary, boundary, sigma_next


def _noise_like(model_output: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """An ancestral step's fresh noise, drawn as diffusers' schedulers draw it (same seeds,
    same pictures)."""
    noise: torch.Tensor = randn_tensor(
        model_output.shape,
        dtype=model_output.dtype,
        device=model_output.device,
        generator=generator,
    )
    return noise


def _denoised(
    prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The model's prediction of the clean latents at noise level ``sigma``."""
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    raise ValueError(
        f"ancestral samplers take epsilon and v_prediction models, not {prediction_type!r}"
    )


class WebUIDDIMScheduler(DDIMScheduler):
    """DDIM on the web UI's timesteps: ``range(0, T, T // steps) + 1``, run from the top down
    to the second lowest, so the last step lands on the lowest one's noise level (t = 1), not
    on t = 0. That is ``ceil(T / (T // steps)) - 1`` model calls: ``steps - 1`` when ``steps``
    divides T, ``steps`` or a few more otherwise (150 steps: 166)."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device = "cpu") -> None:
        super().set_timesteps(num_inference_steps, device)
        train_steps = self.config["num_train_timesteps"]
        ratio = train_steps // num_inference_steps
        timesteps = np.clip(np.arange(0, train_steps, ratio) + 1, 0, train_steps - 1)
        # diffusers' step goes from t to t - ratio: from the second lowest that is t = 1.
        self.timesteps = torch.from_numpy(timesteps[1:][::-1].copy()).to(device)


class KDiffusionMultistepScheduler(DPMSolverMultistepScheduler):
    """DPM++ 2M and 2M SDE whose uniform schedule is k-diffusion's: the model's sigmas at
    ``steps`` timesteps spread evenly from T-1 down to 0, then 0. diffusers' own "linspace"
    spreads ``steps + 1`` and leaves out t = 0. Karras / exponential schedules are diffusers'."""

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        mu: float | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        config = self.config
        own_sigmas = config["use_karras_sigmas"] or config["use_exponential_sigmas"]
        uniform = config["timestep_spacing"] == "linspace" and not own_sigmas
        if uniform and timesteps is None and num_inference_steps is not None:
            last = config["num_train_timesteps"] - 1
            spread = np.linspace(last, 0, num_inference_steps).round().astype(np.int64)
            timesteps, num_inference_steps = spread.tolist(), None
        # diffusers types the steps and device as never None, though None is its default.
        arguments: dict[str, Any] = {"num_inference_steps": num_inference_steps, "device": device}
        super().set_timesteps(**arguments, mu=mu, timesteps=timesteps)
