"""Samplers diffusers does not ship, written as diffusers schedulers.

``DPMSolverPlusPlus2SAncestralScheduler`` is the web UI's "DPM++ 2S a" (k-diffusion's
``sample_dpmpp_2s_ancestral``): per step, one DPM-Solver++ half step to the geometric middle
of sigma and the ancestral step's sigma_down, a second model call there, the full
DPM-Solver++(2S) step to sigma_down, then fresh noise of size sigma_up. Its sigma schedule,
midpoints and model-call bookkeeping are exactly those of diffusers' DPM2 a scheduler, so it
inherits them and only replaces the update.

``WebUIDDIMScheduler`` is the web UI's DDIM, whose timesteps differ from diffusers' own;
``KDiffusionMultistepScheduler`` gives DPM++ 2M (SDE) k-diffusion's uniform schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
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
        denoised = self._denoised(model_output, sample, sigma if first_call else sigma_mid)
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
            noise = randn_tensor(
                model_output.shape,
                dtype=model_output.dtype,
                device=model_output.device,
                generator=generator,
            )
            prev_sample = prev_sample + noise * sigma_up
        self._step_index = step_index + 1  # type: ignore[assignment]
        if not return_dict:
            return (prev_sample, denoised)
        return KDPM2AncestralDiscreteSchedulerOutput(
            prev_sample=prev_sample, pred_original_sample=denoised
        )

    def _denoised(
        self, model_output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """The model's prediction of the clean latents at noise level ``sigma``."""
        prediction_type = self.config["prediction_type"]
        if prediction_type == "epsilon":
            return sample - sigma * model_output
        if prediction_type == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        raise ValueError(
            f"DPM++ 2S a supports epsilon and v_prediction models, not {prediction_type!r}"
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
