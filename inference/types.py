"""The engine's contract: what a render asks for and what it gives back.

Pure Python (no torch) so the bot, the queue and the database can build, store and
compare requests without loading the inference stack.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from inference.lora_batching import lora_batch_key
from inference.prompt_work import PromptWork

if TYPE_CHECKING:
    from PIL import Image

# The embeddings admission found the request's planned prompts name (whole words in any letter
# case, ``inference.prompts.find_embeddings``) among those it may read: its server's list, else
# those installed for the bot (``bot.policy.prompt_safety``). The engine reads no other, so
# every one it reads was seen by the bot, and the start gate ends a job only for one of these
# that the list leaves out now (``bot.policy.addons``). Absent: a job journaled before
# admission recorded them, which reads every installed one (within the option below) and is
# checked as a whole.
USED_EMBEDDINGS_OPTION = "used_embeddings"
# A copy of the server's embedding list, written into each job before the fourteenth stop and
# read only for those jobs: the engine reads the embeddings above within it. No job carries it
# now (the names recorded above say it, and a copy kept jobs of servers with different lists
# out of one batch).
ALLOWED_EMBEDDINGS_OPTION = "embeddings"
# Likewise the ControlNets a unit naming none may be given (``inference.controlnet``).
ALLOWED_CONTROLNETS_OPTION = "controlnets"
# The LoRAs a request may apply, where its server allows some only: those its prompts apply,
# all on the list (``bot.policy.addons.lora_suggestions``), so a LoRA tag naming one not
# installed is told "did you mean" from those only (``inference.passes.jobs``), never from a
# LoRA the server leaves out. Absent: every installed LoRA.
ALLOWED_LORAS_OPTION = "loras"
# The LoRAs a job's plans apply (every picture, /compare cell and wildcard draw), in the order
# first met: filled at each admission (``bot.policy.prompt_safety.plan_request``), whatever
# the request held, so a member cannot forge it; the start gate checks these. Absent: a job
# journaled before admission recorded them, whose prompt is read as typed instead.
APPLIED_LORAS_OPTION = "applied_loras"
# The upscaler options (``bot.policy.addons._UPSCALER_KEYS``) the bot filled in, not the
# member: /imagine's hires fix (the operator's upscaler) and an upscale naming none. Admission
# refills them under the rules of now (a 🔄 or Remix is not refused for a choice the member
# never made, and a hires fix given Lanczos gets the operator's upscaler back where the list
# allows it again), and the start gate lets a job run with them (docs/security.md): it cannot
# change a job that may share a batch, and ending the job would charge the member's queue for
# the server's list change.
UPSCALERS_FILLED_OPTION = "upscalers_filled"
# "faces": fix and/or restore the faces of ``init_image`` (inference.face_options).
Mode = Literal["txt2img", "img2img", "inpaint", "upscale", "faces"]
# The sampler a request names when the member names none (web UI names, inference.samplers).
DEFAULT_SAMPLER = "Euler a"


@dataclass(frozen=True)
class RenderRequest:
    """One generation as the engine sees it: every field already validated by the caller.

    ``seed`` is concrete (never -1) once a job is journaled so a re-render is identical;
    the engine still resolves -1 for direct callers such as ``easel render``.
    Image inputs are file paths (PNG on disk) so the request stays JSON-serialisable.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    cfg_scale: float = 7.0
    # None: the model's native size (shaped by options["aspect"], e.g. "16:9") for txt2img,
    # the input picture's size for img2img and inpainting.
    width: int | None = None
    height: int | None = None
    sampler: str = DEFAULT_SAMPLER
    # The web UI's "Schedule type" label ("Karras", "Exponential"...); "Automatic": what the
    # sampler name says (inference/samplers.py SCHEDULE_TYPES).
    schedule_type: str = "Automatic"
    model: str | None = None
    count: int = 1
    variation_seed: int | None = None
    variation_strength: float = 0.0
    mode: Mode = "txt2img"
    init_image: str | None = None
    mask_image: str | None = None
    denoising_strength: float = 0.75
    # Fast mode, only when asked: a few-step model's own recipe, else a UNet feature cache
    # (inference/fast.py). Pictures are close to, not equal to, the plain render.
    fast: bool = False
    # Extra engine options (hires fix, inpaint fill mode, upscale factor...) keyed by name.
    options: dict[str, Any] = field(default_factory=dict)
    # What the member should know about how the request was read (e.g. an option that
    # overrode a flag typed in the prompt); shown with the result.
    notes: list[str] = field(default_factory=list)

    def to_json(self, *, ascii_only: bool = True) -> str:
        """The request as JSON. ``ascii_only=False``: characters outside ASCII as they are,
        for text that travels as UTF-8 (``utf8_json``), rather than as escapes (6 or 12
        characters each, each escaped again where the text is embedded in more JSON)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=ascii_only)

    @classmethod
    def from_json(cls, text: str) -> RenderRequest:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def size(self) -> tuple[int, int]:
        """Width and height, once they are concrete (the engine fills missing ones first)."""
        if self.width is None or self.height is None:
            raise ValueError("this request's size is not resolved yet (width/height is None)")
        return self.width, self.height

    def pipeline_key(self) -> tuple[object, ...]:
        """Requests with equal keys can be rendered by one pipeline call."""
        return (
            self.model,
            self.width,
            self.height,
            self.sampler,
            self.schedule_type,
            self.steps,
            self.cfg_scale,
            self.mode,
            self.fast,
            # Options that shape the whole pipeline call: requests must agree on them.
            self.options.get("aspect"),
            self.options.get("clip_skip"),
            self.options.get("pad_conds"),
            # The hires pass is the whole call's: the first request's stands for the batch.
            self.options.get("hires_scale"),
            self.options.get("hires_steps"),
            self.options.get("hires_denoising"),
            self.options.get("hires_upscaler"),
            self.options.get("vae"),
            self.options.get("tile"),
            self.options.get("stop"),
            # An SDXL refiner finishes the whole call from the same switch.
            self.options.get("refiner"),
            self.options.get("refiner_switch"),
            # ControlNet units (models, maps, weights) apply to the whole call, and so does
            # the choice of those a unit naming none may be given.
            json.dumps(self.options.get("controlnet"), sort_keys=True),
            tuple(self.options.get(ALLOWED_CONTROLNETS_OPTION) or ()),
            # An IP-Adapter's pictures and weight apply to the whole call too. Embeddings do
            # not: each picture reads its own (``inference.passes.networks``).
            json.dumps(self.options.get("ipadapter"), sort_keys=True),
            # Faces are fixed and restored as the whole call asks (inference.face_options:
            # face_restore, fix_faces, fix_faces_*).
            json.dumps({k: v for k, v in self.options.items() if "face" in k}, sort_keys=True),
        )

    def batch_key(self) -> tuple[object, ...]:
        """Requests the queue may batch: one pipeline call and the same LoRAs (the engine
        would otherwise split the call by LoRA set, loading each in turn), their prompts of
        one band of work (``PromptWork.band``: rows and key length a picture)."""
        return (
            *self.pipeline_key(),
            lora_batch_key(self.prompt),
            PromptWork.of(self.options).band(),
        )


def steps_run(images: Iterable[RenderedImage]) -> int:
    """The denoising steps a render of ``images`` ran on its device (0: not known)."""
    return sum(image.steps_run for image in images)


def utf8_json(value: object) -> bytes:
    """``value`` as JSON in UTF-8, characters outside ASCII as they are; one with a lone
    surrogate (a prompt may hold one, UTF-8 cannot) with every such character escaped."""
    try:
        return json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(value).encode()


@dataclass(frozen=True)
class RenderedImage:
    """One output picture: its PNG carries the infotext.

    The engine hands a picture back as soon as its pixels exist, so the device can start the
    next render: ``encoded`` may be the PNG still being encoded on a CPU pool, and reading
    ``png`` waits for it (off the device thread: the queue stores pictures in a worker)."""

    encoded: bytes | Future[bytes]
    seed: int
    infotext: str
    width: int
    height: int
    # The pixels, so a grid of several pictures is composed without decoding their PNGs
    # (None where only the PNG crossed a wire).
    picture: Image.Image | None = field(default=None, repr=False, compare=False)
    # The denoising steps the device ran for the pipeline call that made it, on the call's
    # first picture (its others were made in the same steps: 0), so a render's pictures add
    # up to its device's steps (``steps_run``); 0 where only the PNG crossed a wire.
    steps_run: int = field(default=0, compare=False)

    @property
    def png(self) -> bytes:
        return self.encoded if isinstance(self.encoded, bytes) else self.encoded.result()

    async def png_ready(self) -> bytes:
        """``png`` for a coroutine: waits for the encoding without blocking the event loop."""
        if isinstance(self.encoded, bytes):
            return self.encoded
        return await asyncio.wrap_future(self.encoded)


@dataclass(frozen=True)
class StepProgress:
    step: int
    total_steps: int
    elapsed_s: float
    # A small JPEG of the pictures so far (latents mapped to colours, no VAE decode), when
    # the engine was asked for previews and one was due at this step.
    preview: bytes | None = None
    # Which request of a batch (its index in ``render_batch``'s list) the report, and its
    # preview, belong to; None: the render's only request. A report of a batch that names none
    # may go to every job in it as a step count, never with its preview.
    request_index: int | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0

    @property
    def eta_s(self) -> float:
        if self.step == 0:
            return 0.0
        return self.elapsed_s / self.step * (self.total_steps - self.step)


ProgressCallback = Callable[[StepProgress], None]


class RenderCancelled(Exception):
    """Raised by the engine when the cancel event is set between two steps."""


class RenderInputError(ValueError):
    """A request the engine refuses before any tensor is made; the message teaches the fix."""


class RenderFailed(Exception):
    """A render failed for a reason worth telling the member as it is (no traceback needed)."""


class BlankPicture(RenderFailed):
    """A picture came out blank (not-a-number or infinite values), from a pass or a model of
    its own job's: in a shared batch that job fails alone (``PartlyRendered``), its partners'
    pictures are kept; alone it would come out blank again."""


class PartlyRendered(Exception):
    """A batch whose pictures of some requests came out blank (``inference.passes.denoise``):
    ``rendered`` holds the pictures of each other request, by its index in the batch, and
    ``failures`` why each of those it lacks failed. The rows of one pipeline call do not mix,
    so those requests would come out blank alone too: they fail, and the others are kept."""

    def __init__(
        self, rendered: dict[int, list[RenderedImage]], failures: dict[int, RenderFailed]
    ) -> None:
        super().__init__(f"{len(failures)} of the batch's requests came out blank")
        self.rendered = rendered
        self.failures = failures
