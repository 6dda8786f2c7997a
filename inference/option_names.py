"""The names a request's ``options`` (``RenderRequest.options``) may hold: each one some part
of this Easel writes or reads, or once did. A worker refuses a job from a bot of its own
version or newer whose options hold another (``bot.jobs.broker.wire``): it would render
without it. A new option is named here, or every such job is refused
(``tests/unit/test_option_names.py`` finds the option names the code uses, and sends a request
from each builder to a worker's check). A name is never removed, even once no code uses it:
journaled queued jobs and old results' requests (🔄, Remix, Vary) still carry it."""

from __future__ import annotations

from inference import (
    compare,
    control_units,
    face_options,
    image_prompts,
    images,
    outpaint,
    prompt_work,
    types,
)
from inference.prompts import wildcards

OPTION_NAMES = frozenset(
    {
        # What the bot's admission records for the start gate and the engine.
        types.ALLOWED_CONTROLNETS_OPTION,
        types.ALLOWED_EMBEDDINGS_OPTION,
        types.ALLOWED_LORAS_OPTION,
        types.APPLIED_LORAS_OPTION,
        types.UPSCALERS_FILLED_OPTION,
        types.USED_EMBEDDINGS_OPTION,
        wildcards.WILDCARD_DRAWS_OPTION,
        compare.COMPARE_OPTION,
        prompt_work.PROMPT_WORK_OPTION,
        # Pictures that guide a render.
        control_units.OPTION_KEY,
        image_prompts.OPTION_KEY,
        # Faces, masks, outpainting.
        face_options.FACE_RESTORE,
        face_options.FIX_FACES,
        face_options.FIX_FACES_CONFIDENCE,
        face_options.FIX_FACES_PROMPT,
        face_options.FIX_FACES_STRENGTH,
        images.MASK_BLUR,
        images.MASK_INVERT,
        images.MASKED_CONTENT,
        images.ONLY_MASKED,
        images.ONLY_MASKED_PADDING,
        outpaint.OUTPAINT,
        outpaint.ZOOM_OUT,
        # The prompt's flags and the web UI's settings (read by name where they are used).
        "aspect",
        "chaos",
        "clip_skip",
        "pad_conds",
        "relax",
        "stop",
        "tile",
        "vae",
        "refiner",
        "refiner_switch",
        "hires_scale",
        "hires_steps",
        "hires_denoising",
        "hires_upscaler",
        "upscale_factor",
        "upscale_mode",
        "upscale_strength",
        "upscaler",
    }
)
