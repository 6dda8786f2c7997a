"""The faces passes: the ADetailer-style fix (each detected face re-rendered as an only-masked
inpaint at the model's native size) and face restoration, after a render or on a stored
picture (the "faces" mode of the Fix faces button). See ``inference.face_options``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence

from PIL import Image

from inference.face_options import (
    FIX_DILATION,
    FIX_MASK_BLUR,
    FIX_PADDING,
    FIX_SEED_KEY,
    NO_VAE,
    FaceOptions,
)
from inference.face_restorers import resolve_face_restorer
from inference.faces import (
    MIN_FACE_SIDE,
    FaceBox,
    FaceDetector,
    face_detector,
    face_mask,
    restore_faces,
)
from inference.family_rules import check_flow_faces
from inference.images import InpaintOptions, inpaint_canvas, load_input_image
from inference.img2img_steps import Img2ImgSteps
from inference.infotext import (
    SAMPLER,
    SCHEDULE_TYPE,
    STEPS,
    InfotextValue,
    asks_for_sampler,
    guidance_of,
    web_ui_sampler_fields,
    without_easel_keys,
)
from inference.limits import DEFAULT_CLIP_SKIP, written_seed
from inference.metadata import takes_distilled_guidance
from inference.model_cache import LoadedModel, native_size
from inference.passes.denoise import BlankRows, PassTools, pipeline_task, task_arguments
from inference.passes.jobs import (
    ImageJob,
    OwnRequest,
    clip_skip_of,
    planned_draws,
    resolve_seed,
)
from inference.passes.networks import JobNetworks, job_networks
from inference.passes.output import call_steps, rendered
from inference.passes.picture_prompts import picture_infotext, rendered_prompts
from inference.progress import StepTracker, previewer_for, raise_if_cancelled
from inference.registry import ModelRegistry
from inference.samplers import AUTOMATIC_SCHEDULE
from inference.types import (
    BlankPicture,
    ProgressCallback,
    RenderedImage,
    RenderInputError,
    RenderRequest,
)

# The fix pass's inpainting, as ADetailer sets it up: only the masked area, at full size.
FIX_INPAINT = InpaintOptions(mask_blur=FIX_MASK_BLUR, only_masked=True, padding=FIX_PADDING)


def check_faces(request: RenderRequest, registry: ModelRegistry) -> None:
    """Refuse bad face options and an unknown or missing restorer before any work."""
    options = FaceOptions.from_options(request.options)
    if options.restore:
        resolve_face_restorer(registry, options.restorer)


def check_faces_model(model: LoadedModel, request: RenderRequest) -> None:
    """An SD3 or Flux ``model`` is refused the faces passes (``check_flow_faces``: the bot
    asks the same before it queues)."""
    if model.flow is not None:
        check_flow_faces(model.flow.label, model.entry.name, request)


def finish_faces(
    model: LoadedModel,
    request: RenderRequest,
    jobs: Sequence[ImageJob],
    images: list[Image.Image],
    networks: JobNetworks,
    tracker: StepTracker,
    tools: PassTools,
    blank: BlankRows | None = None,
) -> tuple[list[Image.Image], dict[str, object]]:
    """``images`` with their faces fixed and/or restored as the request asks, and the
    infotext keys that say so (none when it asks for neither). ``blank``: a shared batch's
    rows set aside as blank, left as they are; one whose faces come out blank is set aside
    too, its partners' go on (None: it fails the render)."""
    options = FaceOptions.from_options(request.options)
    if not options.wanted or (blank is not None and blank.all_of(len(images))):
        return images, {}
    detector = face_detector(tools.registry.models_dir)
    # Found once on the picture as made: a re-rendered face stays where it was.
    faces = [detector.detect(image, options.confidence) for image in images]
    return faces_passes(
        model, request, jobs, images, faces, detector, networks, tracker, tools, blank
    )


def faces_passes(
    model: LoadedModel,
    request: RenderRequest,
    jobs: Sequence[ImageJob],
    images: list[Image.Image],
    faces: list[list[FaceBox]],
    detector: FaceDetector,
    networks: JobNetworks,
    tracker: StepTracker,
    tools: PassTools,
    blank: BlankRows | None = None,
) -> tuple[list[Image.Image], dict[str, object]]:
    """The fix (when asked) then the restoration (when asked) of ``faces`` in ``images``
    (``blank`` as for ``finish_faces``)."""
    options = FaceOptions.from_options(request.options)
    params: dict[str, object] = {}
    if options.fix:

        def fix(row: int, image: Image.Image) -> Image.Image:
            return fixed_faces(
                model, request, jobs[row], image, faces[row], options, networks, tracker, tools
            )

        images = each_picture(images, fix, blank)
        params |= fix_infotext(options, detector)
    if options.restore:
        images, restored = restored_faces(images, faces, options, tools, blank)
        params |= restored
    return images, params


def restored_faces(
    images: list[Image.Image],
    faces: list[list[FaceBox]],
    options: FaceOptions,
    tools: PassTools,
    blank: BlankRows | None = None,
) -> tuple[list[Image.Image], dict[str, object]]:
    name, path = resolve_face_restorer(tools.registry, options.restorer)
    restorer = tools.models.face_restorer(name, path)
    restored = each_picture(
        images, lambda row, image: restore_faces(restorer, image, faces[row]), blank
    )
    # The web UI's key names the kind of restorer; the file says which one exactly.
    return restored, {"Face restoration": restorer.architecture, "Face restoration model": name}


def each_picture(
    images: list[Image.Image],
    work: Callable[[int, Image.Image], Image.Image],
    blank: BlankRows | None,
) -> list[Image.Image]:
    """``work(row, image)`` of each of ``images`` not set aside in ``blank``; one whose result
    comes out blank is set aside there (its partners' go on), or fails the render when
    ``blank`` is None."""
    done = list(images)
    for row, image in enumerate(images):
        if blank is not None and row in blank.rows:
            continue
        try:
            done[row] = work(row, image)
        except BlankPicture as failure:
            if blank is None:
                raise
            blank.set_aside(row, failure)
    return done


def fixed_faces(
    model: LoadedModel,
    request: RenderRequest,
    job: ImageJob,
    image: Image.Image,
    faces: list[FaceBox],
    options: FaceOptions,
    networks: JobNetworks,
    tracker: StepTracker,
    tools: PassTools,
) -> Image.Image:
    """Each of ``faces`` (largest first) re-rendered in turn: the face's box, grown a
    little and padded, cropped to a square, inpainted at the model's native size with the
    picture's seed, and pasted back through the blurred mask. Each runs img2img's steps
    of the picture's (ADetailer's pass is an img2img inpaint)."""
    side = native_size(model)
    size = (side, side)
    task = pipeline_task("inpaint", model.inpainting_unet)
    steps = Img2ImgSteps.img2img(request.steps, options.strength)
    face_request = dataclasses.replace(
        request, mode="inpaint", width=side, height=side, denoising_strength=options.strength
    )
    face_job = (
        job
        if options.prompt is None
        else dataclasses.replace(job, prompt=options.prompt, template=None)
    )
    for face in faces:
        raise_if_cancelled(tracker.cancel)
        mask = face_mask(image.size, face, FIX_DILATION)
        canvas = inpaint_canvas(image.convert("RGB"), mask, size, FIX_INPAINT)
        arguments = task_arguments(task, size, options.strength, None, canvas, 1).running(steps)
        [generated] = tools.denoise(
            model, task, face_request, [face_job], size, request.steps, arguments, tracker, networks
        )
        image = canvas.composite(generated)
    return image


def fix_infotext(options: FaceOptions, detector: FaceDetector) -> dict[str, object]:
    """The ADetailer extension's keys for its first (and here only) unit."""
    return {
        "ADetailer model": detector.name,
        "ADetailer prompt": options.prompt,
        "ADetailer confidence": options.confidence,
        "ADetailer dilate erode": FIX_DILATION,
        "ADetailer mask blur": FIX_MASK_BLUR,
        "ADetailer denoising strength": options.strength,
        "ADetailer inpaint only masked": True,
        "ADetailer inpaint padding": FIX_PADDING,
    }


def separate_settings(
    params: Mapping[str, InfotextValue],
    model: LoadedModel,
    request: RenderRequest,
    *,
    vae: object,
    seed: int,
) -> dict[str, object]:
    """ADetailer's keys for a fix pass rendered with settings of its own, for each of the
    model, VAE (``vae``: the file's name, None: the model's own), sampler, steps, CFG and
    clip skip the pass over a stored picture used that its text (``params``) does not say: a
    stand-in for a model not installed here (without the picture's VAE and clip skip), a
    replaced file, a sampler unknown here; and ``FIX_SEED_KEY``, the seed 🔄 drew."""
    used: dict[str, object] = {}
    written_model = (params.get("Model"), params.get("Model hash", model.short_hash))
    if written_model != (model.entry.name, model.short_hash):
        used["checkpoint"] = f"{model.entry.name} [{model.short_hash}]"
    if not asks_for_sampler(params, request.sampler, request.schedule_type):
        sampler = web_ui_sampler_fields(request.sampler, request.schedule_type)
        used["sampler"] = sampler[SAMPLER]
        # Written when Automatic too: ADetailer reads none as "Use same scheduler", the text's.
        used["scheduler"] = sampler.get(SCHEDULE_TYPE, AUTOMATIC_SCHEDULE)
    if params.get(STEPS) != request.steps:
        used["steps"] = request.steps
    distilled = model.flow is not None and takes_distilled_guidance(model.flow.label)
    if guidance_of(params, distilled_model=distilled) != request.cfg_scale:
        used["CFG scale"] = float(request.cfg_scale)
    if params.get("VAE") != vae:
        used["VAE"] = vae or NO_VAE
    if params.get("Clip skip", DEFAULT_CLIP_SKIP) != (clip_skip := clip_skip_of(request)):
        used["CLIP skip"] = clip_skip
    switches = {f"ADetailer use separate {what}": True for what in used if what != "scheduler"}
    separate = {**switches, **{f"ADetailer {what}": value for what, value in used.items()}}
    return separate | ({} if params.get("Seed") == seed else {FIX_SEED_KEY: seed})


def faces_of_picture(
    request: RenderRequest,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    tools: PassTools,
    *,
    default_model: str | None,
) -> list[RenderedImage]:
    """The "faces" mode: ``init_image``'s faces fixed and/or restored. The picture keeps its
    own infotext (prompt, seed, settings) with the face keys added, as an upscale does."""
    assert request.init_image is not None  # validate_request made sure
    options = FaceOptions.from_options(request.options)
    check_faces(request, tools.registry)
    source = load_input_image(request.init_image, "picture").convert("RGB")
    picture = picture_infotext(request)
    params = picture[2]
    # The request's seed (the picture's, from a button; a new one from 🔄), else the picture's.
    written = written_seed(params.get("Seed"))
    seed = resolve_seed(request.seed) if request.seed != -1 or written is None else written
    job = ImageJob(
        *rendered_prompts(request, picture),
        seed,
        None,
        0.0,
        draws=planned_draws(request),
        own_request=OwnRequest.of(request),
    )
    detector = face_detector(tools.registry.models_dir)
    found = detector.detect(source, options.confidence)
    if not found:  # refused, so the job is refunded rather than charged for the same picture
        raise RenderInputError(
            f"no face found in this picture: the detector ({detector.name}) looks for faces "
            f"seen from the front, at least {MIN_FACE_SIDE} pixels wide"
        )
    tracker = StepTracker(progress, cancel, tools.preview_interval_s)
    if options.fix:
        entry = tools.registry.resolve(request.model, default_model)
        raise_if_cancelled(cancel)
        model = tools.models.load(entry)
        check_faces_model(model, request)
        tracker.previewer = previewer_for(model, progress, tools.preview_interval_s)
        with job_networks(tools.registry, tools.models, model, request, [job]) as networks:
            [image], faces = faces_passes(
                model, request, [job], [source], [found], detector, networks, tracker, tools
            )
        faces |= separate_settings(
            params, model, request, vae=networks.shared_infotext["VAE"], seed=seed
        )
    else:
        [image], faces = restored_faces([source], [found], options, tools)
    raise_if_cancelled(cancel)
    # Less the picture's own warnings and version: this render's are written.
    made = rendered(tools.encoder, job, image, {**without_easel_keys(params), **faces})
    return call_steps([made], tracker)
