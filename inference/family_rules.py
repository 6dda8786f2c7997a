"""What a model family cannot take, told from the family as its tensors say it
(``tensor_family``: a header read, never a load, and never the metadata, which the engine does
not load by). The engine refuses with these sentences after it loads a model, as the last
line; the bot asks the same before it queues a request, so a member's mistake is refused
privately, not after a wait in the queue. Pure Python (no torch)."""

from __future__ import annotations

from inference.control_units import control_units
from inference.face_options import FaceOptions
from inference.flow_detect import FLOW_FAMILY_NAMES, SD3_LABEL
from inference.image_prompts import OPTION_KEY as IMAGE_PROMPT_KEY
from inference.limits import DEFAULT_CLIP_SKIP
from inference.metadata import FAMILY_NAMES, FLOW_LABELS, latent_channels_of, tensor_family
from inference.prompts import PromptPlan
from inference.registry import ModelEntry, ModelRegistry
from inference.types import DEFAULT_SAMPLER, RenderInputError, RenderRequest
from inference.upscale import UpscaleOptions
from inference.vae_files import vae_file

REFINER_FAMILY = FAMILY_NAMES["sdxl-refiner"]
# The families a refiner cannot finish: their latents are not SDXL's.
_NOT_SDXL = (
    frozenset(FAMILY_NAMES[family] for family in ("sd15", "sd15-inpainting", "sd2-v")) | FLOW_LABELS
)


# Every flow family's default sampler: the request default ("Euler a") has no flow-matching form.
FLOW_EULER = "Euler"
_SD3_SAMPLERS = (FLOW_EULER, "DPM++ 2M", "UniPC", "Heun")
# The samplers each flow-matching family takes, by the label its rules are told in
# (``rules_label``). The engine's scheduler for each: ``flow_families.make_flow_scheduler``.
FLOW_SAMPLERS = {
    SD3_LABEL: _SD3_SAMPLERS,
    FLOW_FAMILY_NAMES["flux-dev"]: (FLOW_EULER, "DPM++ 2M", "UniPC"),
    # Schnell has no dynamic shift; diffusers' DPM++ 2M takes the pipeline's shift only with it.
    FLOW_FAMILY_NAMES["flux-schnell"]: (FLOW_EULER, "UniPC"),
}


# A creative upscale re-renders its tiles through a UNet img2img pass, which has no flow form.
CREATIVE_UPSCALE = "the creative upscale (img2img in tiles)"

# Every SD3 size takes SD3's rules. They are told as "SD 3" wherever they are checked: the
# engine knows the pipeline's family, not its size, and the early check says the same words.
_SD3_SIZES = (FLOW_FAMILY_NAMES["sd35-large"], FLOW_FAMILY_NAMES["sd35-medium"])


class FlowRefusal(RenderInputError):
    """What a flow family cannot take (``feature``: "sampler", "clip skip", "ControlNet"...),
    told apart from the other refusals: a sampler or clip skip the member saved, not typed,
    is refused naming where it is kept."""

    def __init__(self, message: str, feature: str) -> None:
        super().__init__(message)
        self.feature = feature


def rules_label(family: str) -> str:
    """The label the rules of ``family`` (``tensor_family``'s) are told in: "SD 3" for an SD
    3.5 of either size, as the engine says it; any other family's own."""
    return SD3_LABEL if family in _SD3_SIZES else family


def flow_sampler(label: str, name: str) -> tuple[str, str | None]:
    """The sampler ``name`` renders with on the flow family ``label``, and a note when it had
    to change: the default "Euler a" becomes Euler; any other it lacks is refused."""
    if name == DEFAULT_SAMPLER:
        return FLOW_EULER, f"{label} has no Euler a (flow matching); rendered with Euler"
    samplers = FLOW_SAMPLERS[label]
    if name not in samplers:
        raise FlowRefusal(
            f"the {name} sampler does not work with {label} models; choose one of: "
            f"{', '.join(samplers)}",
            "sampler",
        )
    return name, None


def flow_refusal(label: str, what: str) -> FlowRefusal:
    """``what`` (a feature) refused for the flow-matching family ``label`` (Flux dev...)."""
    return FlowRefusal(f"{what} does not work with {label} models here", what)


def check_flow_request(label: str, request: RenderRequest) -> None:
    """One sentence for each SD feature the flow-matching family ``label`` cannot take."""
    options = request.options
    if request.mode == "upscale" and UpscaleOptions.from_options(options).mode == "creative":
        raise flow_refusal(label, CREATIVE_UPSCALE)
    flow_sampler(label, request.sampler)
    if control_units(options):
        raise flow_refusal(label, "ControlNet")
    if options.get("refiner"):
        raise flow_refusal(label, "the SDXL refiner")
    if options.get(IMAGE_PROMPT_KEY):
        raise flow_refusal(label, "IP-Adapter (--sref, /blend)")
    if request.fast:
        raise flow_refusal(label, "fast mode (a UNet feature cache)")
    if options.get("clip_skip", DEFAULT_CLIP_SKIP) != DEFAULT_CLIP_SKIP:
        raise flow_refusal(label, "clip skip")
    if options.get("tile"):
        raise flow_refusal(label, "seamless tiling (--tile)")
    if options.get("pad_conds"):
        raise flow_refusal(label, "pad conds")


def flow_prompt_refusal(label: str, plan: PromptPlan) -> RenderInputError | None:
    """What the flow-matching family ``label`` cannot read of ``plan`` (the prompt's, over the
    request's steps), refused; None: nothing. T5 and CLIP read one plain text, so no ``AND``
    parts in the prompt, and no text that changes over the steps (prompt editing,
    alternation) in it or in the negative prompt."""
    if len(plan.subprompts) > 1:
        return flow_refusal(label, "AND (composable prompts)")
    if any(len(part.schedule) > 1 for part in (plan.subprompts[0], plan.negative)):
        return flow_refusal(label, "prompt editing and alternation ([a:b:when], [a|b])")
    return None


def check_flow_faces(label: str, model: str, request: RenderRequest) -> None:
    """The faces passes run after an SD 1.x / SDXL render (the fix re-renders through its
    UNet): ``model``, of the flow-matching family ``label``, is refused them rather than its
    faces silently left alone. A faces job that only restores runs no model."""
    faces = FaceOptions.from_options(request.options)
    if faces.fix or (faces.restore and request.mode != "faces"):
        raise RenderInputError(
            f"{model} ({label}) cannot fix or restore faces: that works with SD 1.x and SDXL "
            "models; leave out --faces and --restore-faces or pick another"
        )


def refiner_as_model(name: str) -> RenderInputError:
    """The refusal of the refiner ``name`` asked for as the model that starts a picture."""
    return RenderInputError(
        f"{name} is an SDXL refiner: it finishes pictures an SDXL model starts "
        "(name it as the refiner); choose another model"
    )


def refiner_needs_sdxl_base(name: str) -> RenderInputError:
    """The refusal of a refiner asked for after ``name``, which is no SDXL base model."""
    return RenderInputError(
        f"a refiner finishes SDXL pictures; {name} is not an SDXL base model: "
        "choose an SDXL model or no refiner"
    )


def check_family_request(family: str, model: str, request: RenderRequest) -> None:
    """Refuse what ``model``, of ``family`` (as ``tensor_family`` says it), cannot render of
    ``request``; an unknown family is left to the engine."""
    if family == REFINER_FAMILY:
        raise refiner_as_model(model)
    if family in FLOW_LABELS:
        check_flow_request(rules_label(family), request)
        check_flow_faces(rules_label(family), model, request)
    if request.options.get("refiner") and family in _NOT_SDXL:
        raise refiner_needs_sdxl_base(model)


def check_model_family(
    registry: ModelRegistry,
    request: RenderRequest,
    default_model: str | None,
    *,
    vae: bool = False,
) -> None:
    """``check_family_request`` for the model ``request`` renders with (None: ``default_model``,
    else the first installed, as the engine picks), its family read from its header (cached
    per file version; blocking). A model not installed here (a typo, or a broker's workers
    hold the models) is left to the check that names those there are. ``vae``: its VAE too,
    refused when of another family (``vae_file``), once admission found it installed and
    allowed (else this sentence would tell of a VAE the server leaves out)."""
    entry = _installed(registry, request.model, default_model)
    if entry is not None:
        check_family_request(tensor_family(entry), entry.name, request)
        if vae:
            vae_file(registry, request, latent_channels_of(entry))


def flow_label(registry: ModelRegistry, model: str) -> str | None:
    """The label the rules of ``model`` are told in when it is of a flow-matching family
    (``rules_label``), from its header (blocking: a safetensors header is cached per file
    version, a GGUF file or diffusers folder read again each call, under 1 ms); None for any
    other family or a model not installed here (left to the engine where it renders)."""
    entry = _installed(registry, model, None)
    if entry is None:
        return None
    family = tensor_family(entry)
    return rules_label(family) if family in FLOW_LABELS else None


def _installed(
    registry: ModelRegistry, model: str | None, default: str | None
) -> ModelEntry | None:
    """The entry ``model`` (None: ``default``) names, None when none is installed here."""
    try:
        return registry.resolve(model, default)
    except RenderInputError:
        return None
