"""The refiner pass: an SDXL refiner checkpoint takes the base model's half-denoised latents at
the switch and runs the rest of the schedule (diffusers' ``denoising_end`` on the base call,
``denoising_start`` on the refiner's img2img call), as the web UI's "Refiner" does."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inference.family_rules import refiner_needs_sdxl_base
from inference.model_cache import LoadedModel
from inference.networks import EmbeddingPlaceholders
from inference.passes.denoise import BlankRows, PassTools, TaskArguments
from inference.passes.jobs import ImageJob, PromptTimeline
from inference.passes.networks import JobNetworks
from inference.progress import StepTracker
from inference.refiner import RefinerOptions
from inference.types import RenderInputError, RenderRequest


@dataclass(frozen=True)
class Refining:
    """A request's refiner, loaded beside the base model it finishes for."""

    options: RefinerOptions
    refiner: LoadedModel

    def base_arguments(self, arguments: TaskArguments) -> TaskArguments:
        """The base model's txt2img call, stopped at the switch (its latents stay noisy)."""
        values = {**arguments.values, "denoising_end": self.options.switch}
        return dataclasses.replace(arguments, values=values)

    def later_steps(self, steps: int) -> int:
        return self.options.refiner_steps(steps)

    def infotext(self) -> dict[str, object]:
        return self.options.infotext(self.refiner.short_hash)

    def finish(
        self,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        size: tuple[int, int],
        latents: torch.Tensor,
        tracker: StepTracker,
        networks: JobNetworks,
        tools: PassTools,
        blank: BlankRows | None = None,
    ) -> Any:
        """The pictures: the rest of the schedule from ``latents`` (the base call's output);
        ``blank``: where those that decode blank are set aside (``Denoiser``)."""
        # LoRAs and embeddings belong to the base model's networks; the refiner reads the
        # prompt as plain words (its one encoder has no place for the base's embeddings).
        plain = dataclasses.replace(networks, tokens=EmbeddingPlaceholders({}))
        arguments = TaskArguments(
            {"image": latents, "denoising_start": self.options.switch}, starts_from_noise=False
        )
        tracker.later_steps = 0
        return tools.denoise(
            self.refiner,
            "img2img",
            request,
            jobs,
            size,
            request.steps,
            arguments,
            tracker,
            plain,
            timeline=PromptTimeline(request.steps, finishes_schedule=True),
            blank=blank,
        )


def refining_for(request: RenderRequest, base: LoadedModel, tools: PassTools) -> Refining | None:
    """The refiner ``request`` names, loaded, once both models are known to fit their roles
    (None: no refiner)."""
    options = RefinerOptions.from_options(request.options)
    if options is None:
        return None
    if not base.is_sdxl_base:
        raise refiner_needs_sdxl_base(base.entry.name)
    refiner = tools.models.refiner(tools.registry.resolve(options.model))
    if not refiner.is_refiner:
        raise RenderInputError(
            f"{options.model} is not an SDXL refiner (it has no refiner's single OpenCLIP text "
            "encoder): choose a refiner model"
        )
    return Refining(options, refiner)
