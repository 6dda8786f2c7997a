"""Samplers diffusers does not ship, written as diffusers schedulers.

``DPMSolverPlusPlus2SAncestralScheduler`` is the web UI's "DPM++ 2S a" (k-diffusion's
``sample_dpmpp_2s_ancestral``): per step, one DPM-Solver++ half step to the geometric middle
of sigma and the ancestral step's sigma_down, a second model call there, the full
DPM-Solver++(2S) step to sigma_down, then fresh noise of size sigma_up. Its sigma schedule,
midpoints and model-call bookkeeping are exactly those of diffusers' DPM2 a scheduler, so it
inherits them and only replaces the update.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
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
