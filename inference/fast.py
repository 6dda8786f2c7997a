"""Fast mode, only when a member asks for it (``fast`` option, ``--fast`` flag).

Two ways to be fast, picked by the model:

* Models distilled for few steps (LCM, Turbo, Lightning; told by a word of the model's name
  or its scheduler) get their own recipe: few steps, low CFG and the matching sampler.
* Every other model keeps its steps and samples with a feature cache on the UNet, after
  DeepCache (Ma et al., 2023): the deep blocks' features change slowly from one step to the
  next, so they are computed fully every ``interval`` UNet calls and reused in between, when
  only the shallowest blocks (full resolution) run again.

diffusers' own cache hooks (first-block cache, FasterCache...) look for transformer block lists
and do not apply to ``UNet2DConditionModel``, hence the cache here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from inference.guidance import UNET_CHUNK
from inference.types import RenderRequest

# One full UNet evaluation, then two with cached deep features: the DeepCache paper's
# N=3 keeps Stable Diffusion's pictures close while taking most of the sampling time off.
DEEP_CACHE_INTERVAL = 3


@dataclass(frozen=True)
class FastPreset:
    """A distilled model's own sampling recipe."""

    family: str  # LCM, Turbo or Lightning, as told by the model's name or scheduler
    steps: int
    cfg_scale: float
    sampler: str
    # Turbo and Lightning were distilled on evenly spaced timesteps from the last ("trailing").
    schedule_type: str = "Automatic"

    def applied(self, request: RenderRequest) -> RenderRequest:
        return dataclasses.replace(
            request,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            sampler=self.sampler,
            schedule_type=self.schedule_type,
        )


# Model cards: LCM 4 steps at CFG 1-2 with its own sampler; SD/SDXL Turbo 1-4 steps without
# CFG (1 turns it off); SDXL Lightning 4 steps without CFG, Euler.
_PRESETS = (
    FastPreset("LCM", steps=4, cfg_scale=1.5, sampler="LCM"),
    FastPreset("Turbo", steps=4, cfg_scale=1.0, sampler="Euler a", schedule_type="SGM Uniform"),
    FastPreset("Lightning", steps=4, cfg_scale=1.0, sampler="Euler", schedule_type="SGM Uniform"),
)


def _names_family(model_name: str, family: str) -> bool:
    """Whether a model's name names ``family`` (lower case): as a word of it, split at
    anything but a letter and at camelCase humps ("DreamShaperXL-Turbo": dream, shaper, xl,
    turbo), or at the start or end of a run of letters ("sdxlturbo", "lcmlora"); so
    "realcmix", with "lcm" inside a run, does not."""
    words = {word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", model_name)}
    runs = re.findall(r"[a-z]+", model_name.lower())
    return family in words or any(run.startswith(family) or run.endswith(family) for run in runs)


def fast_preset(model_name: str, scheduler_config: Mapping[str, Any]) -> FastPreset | None:
    """The recipe of a few-step model, None for an ordinary one (which uses the cache)."""
    scheduler = str(scheduler_config.get("_class_name", ""))
    for preset in _PRESETS:
        family = preset.family.lower()
        if _names_family(model_name, family) or scheduler.lower().startswith(family):
            return preset
    return None


def fast_infotext(request: RenderRequest, preset: FastPreset | None) -> str | None:
    """The ``Fast`` infotext value: how the picture was made fast, None when it was not."""
    if not request.fast:
        return None
    if preset is not None:
        return f"{preset.family} preset"
    return f"DeepCache {DEEP_CACHE_INTERVAL}"


class DeepCache:
    """Reuse the deep blocks' outputs of ``unet`` (a ``UNet2DConditionModel``) between full calls.

    Every block but the first down block and the last up block is deep: at a cached call
    those blocks return what they returned at the last full call, while conv_in, the first
    down block (whose skip connections feed the last up block) and the last up block run on
    the new input. The UNet's own forward threads the tensors, so SD1.5, SDXL and inpainting
    UNets work alike. A new input shape (another pass, another batch) forces a full call.
    Each chunk of a split UNet call (``inference.guidance.MAX_UNET_ROWS``) has its own cache,
    kept by its rows (``UNET_CHUNK``): chunks of one shape hold other rows.
    """

    def __init__(self, unet: Any, interval: int = DEEP_CACHE_INTERVAL) -> None:
        if interval < 1:
            raise ValueError(f"the cache interval must be at least 1, got {interval}")
        self.unet = unet
        self.interval = interval
        self.calls = 0
        self.full_calls = 0
        self._reusing = False
        self._chunk = (0, 0)  # the rows of the call running (``UNET_CHUNK``)
        # Per chunk: calls since its last full one, and that call's input shape.
        self._since_full: dict[tuple[int, int], int] = {}
        self._shapes: dict[tuple[int, int], torch.Size] = {}
        self._outputs: dict[tuple[tuple[int, int], int], Any] = {}  # by (chunk, block)

    def _deep_blocks(self) -> list[torch.nn.Module]:
        unet = self.unet
        return [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]

    def _before_call(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        chunk = self._chunk = UNET_CHUNK.get()
        full = (
            self._shapes.get(chunk) != sample.shape or self._since_full[chunk] >= self.interval - 1
        )
        self.calls += 1
        self._reusing = not full
        if full:
            self.full_calls += 1
            self._since_full[chunk] = 0
            self._shapes[chunk] = sample.shape
        else:
            self._since_full[chunk] += 1

    def _cached_forward(self, index: int, forward: Any) -> Any:
        def cached(*args: Any, **kwargs: Any) -> Any:
            if self._reusing:
                return self._outputs[self._chunk, index]
            output = forward(*args, **kwargs)
            self._outputs[self._chunk, index] = output
            return output

        return cached

    @contextmanager
    def installed(self) -> Iterator[DeepCache]:
        """Cache for the calls made inside the block; the UNet is untouched afterwards."""
        blocks = self._deep_blocks()
        # An instance-level forward (accelerate's offload hooks) is kept and put back.
        own_forwards = [block.__dict__.get("forward") for block in blocks]
        for index, block in enumerate(blocks):
            block.forward = self._cached_forward(index, block.forward)
        handle = self.unet.register_forward_pre_hook(self._before_call, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()
            for block, own in zip(blocks, own_forwards, strict=True):
                if own is None:
                    del block.forward
                else:
                    block.forward = own
            self._outputs.clear()
