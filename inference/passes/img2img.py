"""img2img, inpaint and outpaint: the pictures a request brings (loaded and checked before the
model is), an outpaint as the inpainting of its grown canvas, and the inpaint infotext."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PIL import Image

from inference.images import InpaintCanvas, InpaintOptions, inpaint_canvas, load_input_image
from inference.outpaint import OutpaintOptions, outpaint_canvas
from inference.types import RenderInputError, RenderRequest


def outpainted(request: RenderRequest) -> RenderRequest:
    """An outpaint / zoom-out request as the inpainting of its grown canvas."""
    options = OutpaintOptions.from_options(request.options)
    if options is None:
        return request
    assert request.init_image is not None  # validate_request made sure
    width, height = load_input_image(request.init_image, "init image").size
    size = options.margins(width, height).canvas_size(width, height)
    if (request.width, request.height) not in ((None, None), size):
        raise RenderInputError(
            f"outpainting makes a {size[0]}x{size[1]} picture; leave width and height "
            f"unset (got {request.width}x{request.height})"
        )
    return dataclasses.replace(request, mode="inpaint", width=size[0], height=size[1])


@dataclass(frozen=True)
class RenderInputs:
    """Pictures a request brings, loaded and checked before the model is."""

    init: Image.Image | None = None
    canvas: InpaintCanvas | None = None


def load_inputs(request: RenderRequest) -> RenderInputs:
    size = request.size()
    if request.mode == "img2img" and request.init_image:
        init = load_input_image(request.init_image, "init image")
        return RenderInputs(init=init.resize(size, Image.Resampling.LANCZOS))
    outpaint = OutpaintOptions.from_options(request.options)
    if outpaint is not None and request.init_image:
        init = load_input_image(request.init_image, "init image")
        return RenderInputs(canvas=outpaint_canvas(init, outpaint.margins(*init.size)))
    if request.mode == "inpaint" and request.init_image and request.mask_image:
        init = load_input_image(request.init_image, "init image")
        mask = load_input_image(request.mask_image, "mask image")
        options = InpaintOptions.from_options(request.options)
        return RenderInputs(canvas=inpaint_canvas(init, mask, size, options))
    return RenderInputs()


def input_infotext(request: RenderRequest) -> dict[str, object]:
    """The fields of a render from a picture (img2img, inpaint): its strength and mask."""
    return {"Denoising strength": request.denoising_strength, **inpaint_infotext(request)}


def inpaint_infotext(request: RenderRequest) -> dict[str, object]:
    if request.mode != "inpaint":
        return {}
    outpaint = OutpaintOptions.from_options(request.options)
    if outpaint is not None and request.init_image:
        width, height = load_input_image(request.init_image, "init image").size
        return {"Masked content": "fill", "Outpaint": outpaint.margins(width, height).describe()}
    options = InpaintOptions.from_options(request.options)
    return {
        "Mask blur": options.mask_blur,
        "Masked content": options.masked_content,
        "Inpaint area": "Only masked" if options.only_masked else None,
        "Masked area padding": options.padding if options.only_masked else None,
        "Mask mode": "Inpaint not masked" if options.invert else None,
    }
