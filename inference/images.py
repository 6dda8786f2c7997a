"""Input pictures for img2img and inpainting: safe loading and the web UI's mask handling.

Pure PIL + numpy (no torch), so a bad file is refused before any model is touched.
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFilter

from inference.types import RenderInputError

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# A JPEG with a multi-picture index (some phones and cameras) opens as "MPO" (through Pillow's
# JPEG plugin); its first picture is the photo, read as a JPEG's.
JPEG_WITH_MORE_PICTURES = "MPO"
# Checked from the header before decoding; PIL's own bomb limit is turned into an error too.
MAX_INPUT_SIDE = 4096
MIN_INPUT_SIDE = 8
MASK_THRESHOLD = 127
# Greyscale modes wider than 8 bits (a 16-bit PNG opens as "I;16"; "I" is 32-bit). Pillow's
# conversions clip them at 255, so a 16-bit grey of 40000 (61%) would turn white. 16-bit
# colour PNGs already open as 8-bit RGB(A).
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535
# How each EXIF orientation but 1 (shown as stored) turns or mirrors the stored pixels, as
# ``ImageOps.exif_transpose`` does; 5 to 8 swap the sides. Phones store a photo as the sensor
# read it and say there how to turn it.
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIDES_SWAPPED = frozenset(range(5, 9))
# The most EXIF a JPEG can carry (one segment); a larger one (a PNG's or a WebP's) is not read,
# its orientation taken as none: Pillow reads every field of it in Python (10 MiB of fields
# took half a second).
_MAX_EXIF_BYTES = 65_535
# How Pillow's EXIF parser fails on a broken EXIF: SyntaxError (not a TIFF header), struct.error
# (cut short), and its field readers' other errors. A fuzz of 20,000 altered EXIFs in PNGs and
# WebPs raised only the first two.
_EXIF_PARSE_ERRORS = (SyntaxError, struct.error, OSError, ValueError, TypeError)


def load_input_image(path: str | Path, role: str) -> Image.Image:
    """Open ``path`` as an RGB picture, refusing anything that is not a sane image file."""
    path = Path(path)
    if not path.is_file():  # the path (a server's) for the log; the member reads the role
        log.warning("%s %s does not exist or is not a file", role, path)
        raise RenderInputError(f"{role} is missing or not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_header(image, role)
                image.load()
                return eight_bit(image).convert("RGB")
    except RenderInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RenderInputError(f"{role} is too large to decode safely: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "not an image"
        raise RenderInputError(
            f"{role} is not a readable image ({', '.join(ACCEPTED_FORMATS)}): {error}"
        ) from error


def has_wide_greys(image: Image.Image) -> bool:
    return image.mode in _WIDE_GREY_MODES


def eight_bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit channels: wide greyscale scaled from 0-65535 to 0-255 (mode "L");
    any other picture as it is."""
    if not has_wide_greys(image):
        return image
    values = np.asarray(image, dtype=np.float64) * (255 / _SIXTEEN_BIT_MAX)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def exif_orientation(image: Image.Image) -> int:
    """The picture's EXIF orientation (1: none), from the EXIF its header held (a JPEG's,
    a WebP's, a PNG's eXIf chunk before its pixels) or, once decoded, from one after them:
    asking a PNG without any would decode it. An EXIF Pillow cannot parse gives none, as
    viewers show such a picture (a JPEG's is parsed at open, its errors swallowed there; a
    PNG's or a WebP's only here)."""
    exif = image.info.get("exif")
    if not isinstance(exif, bytes) or len(exif) > _MAX_EXIF_BYTES:
        return 1
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _EXIF_PARSE_ERRORS:
        return 1
    return orientation if isinstance(orientation, int) else 1


def upright(image: Image.Image) -> Image.Image:
    """A picture as viewers show it: turned by its EXIF orientation (``image`` itself when
    it has none). Not ``ImageOps.exif_transpose``: it writes the EXIF again without the
    orientation, which nothing here keeps, and a crafted EXIF made that write raise."""
    turn = _TURNS.get(exif_orientation(image))
    return image if turn is None else image.transpose(turn)


def _check_header(image: Image.Image, role: str) -> None:
    if image.format not in (*ACCEPTED_FORMATS, JPEG_WITH_MORE_PICTURES):
        raise RenderInputError(
            f"{role} must be one of {', '.join(ACCEPTED_FORMATS)}, got {image.format or 'unknown'}"
        )
    width, height = image.size
    if not all(MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE for side in (width, height)):
        raise RenderInputError(
            f"{role} must be between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE} pixels on each side, "
            f"got {width}x{height}"
        )


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int, invert: bool) -> Image.Image:
    """Greyscale mask (white = repaint) at ``size``, optionally inverted, then blurred."""
    grey = mask.convert("L").resize(size, Image.Resampling.LANCZOS)
    binary = grey.point(lambda value: 255 if (value > MASK_THRESHOLD) != invert else 0)
    return binary.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else binary


def _box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2 radius + 1)^2 window (clipped at the borders), via cumulative sums."""
    for axis in (0, 1):
        length = values.shape[axis]
        padded = np.concatenate(
            [np.zeros_like(np.take(values, [0], axis=axis)), np.cumsum(values, axis=axis)],
            axis=axis,
        )
        upper = np.clip(np.arange(length) + radius + 1, 0, length)
        lower = np.clip(np.arange(length) - radius, 0, length)
        values = np.take(padded, upper, axis=axis) - np.take(padded, lower, axis=axis)
    return values


def fill_masked_area(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Web UI "fill": paint the hole with the averaged colours of its surroundings."""
    pixels = np.asarray(image, dtype=np.float64)
    unknown = np.asarray(mask) > MASK_THRESHOLD
    if unknown.all():
        return Image.new("RGB", image.size, (127, 127, 127))
    # Nearby colours first; wider windows reach the middle of large holes.
    for radius in (4, 16, 64, max(image.size)):
        known = (~unknown).astype(np.float64)
        weight = _box_blur(known, radius)
        colour = _box_blur(pixels * known[..., None], radius) / np.maximum(weight, 1e-9)[..., None]
        reached = unknown & (weight > 0)
        pixels[reached] = colour[reached]
        unknown &= ~reached
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def composite_outside_mask(
    original: Image.Image, generated: Image.Image, mask: Image.Image
) -> Image.Image:
    """Keep ``original`` wherever the (blurred) mask is black, blend along its soft edge."""
    return Image.composite(generated, original, mask)


@dataclass(frozen=True)
class CropBox:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom


def masked_region(mask: Image.Image, padding: int, target_size: tuple[int, int]) -> CropBox | None:
    """The "only masked" crop: the mask's bounding box plus ``padding``, widened to the
    render's aspect ratio and kept inside the picture. None when the mask is empty."""
    bounds = mask.getbbox()
    if bounds is None:
        return None
    image_width, image_height = mask.size
    left, top, right, bottom = bounds
    left, top = max(left - padding, 0), max(top - padding, 0)
    right, bottom = min(right + padding, image_width), min(bottom + padding, image_height)
    target_ratio = target_size[0] / target_size[1]
    width, height = right - left, bottom - top
    if width / height < target_ratio:
        width = min(round(height * target_ratio), image_width)
    else:
        height = min(round(width / target_ratio), image_height)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    new_left = int(min(max(centre_x - width / 2, 0), image_width - width))
    new_top = int(min(max(centre_y - height / 2, 0), image_height - height))
    return CropBox(new_left, new_top, new_left + width, new_top + height)


# Inpainting options, read from ``RenderRequest.options`` (names and defaults as in the web UI).
MASK_BLUR, MAX_MASK_BLUR, DEFAULT_MASK_BLUR = "mask_blur", 64, 4
MASK_INVERT = "mask_invert"
MASKED_CONTENT, DEFAULT_MASKED_CONTENT = "masked_content", "original"
MASKED_CONTENTS = ("fill", "original", "latent noise", "latent nothing")
ONLY_MASKED = "only_masked"
ONLY_MASKED_PADDING, MAX_PADDING, DEFAULT_PADDING = "only_masked_padding", 256, 32
# Filled in latent space by the engine: the picture's own seeded noise, or zeros.
LATENT_FILLS = ("latent noise", "latent nothing")


@dataclass(frozen=True)
class InpaintOptions:
    mask_blur: int = DEFAULT_MASK_BLUR
    invert: bool = False
    masked_content: str = DEFAULT_MASKED_CONTENT
    only_masked: bool = False
    padding: int = DEFAULT_PADDING

    @classmethod
    def from_options(cls, options: dict[str, object]) -> InpaintOptions:
        blur = options.get(MASK_BLUR, DEFAULT_MASK_BLUR)
        padding = options.get(ONLY_MASKED_PADDING, DEFAULT_PADDING)
        content = options.get(MASKED_CONTENT, DEFAULT_MASKED_CONTENT)
        if not isinstance(blur, int) or not 0 <= blur <= MAX_MASK_BLUR:
            raise RenderInputError(
                f"mask blur must be a whole number from 0 to {MAX_MASK_BLUR}, got {blur!r}"
            )
        if not isinstance(padding, int) or not 0 <= padding <= MAX_PADDING:
            raise RenderInputError(
                f"only-masked padding must be a whole number from 0 to "
                f"{MAX_PADDING}, got {padding!r}"
            )
        if content not in MASKED_CONTENTS:
            raise RenderInputError(
                f"masked content must be one of {', '.join(MASKED_CONTENTS)}, got {content!r}"
            )
        return cls(
            blur,
            bool(options.get(MASK_INVERT, False)),
            str(content),
            bool(options.get(ONLY_MASKED, False)),
            padding,
        )


@dataclass(frozen=True)
class InpaintCanvas:
    """What the pipeline sees (``image``, ``mask`` at render size) and how to put it back."""

    image: Image.Image
    mask: Image.Image
    backdrop: Image.Image  # the picture the result is composited into
    backdrop_mask: Image.Image  # blurred mask at backdrop size
    crop: CropBox | None
    # "latent noise" / "latent nothing": the engine fills the masked latents, not the pixels.
    latent_fill: str | None = None

    def composite(self, generated: Image.Image) -> Image.Image:
        if self.crop is None:
            return composite_outside_mask(self.backdrop, generated, self.backdrop_mask)
        region = generated.resize(self.crop.size, Image.Resampling.LANCZOS)
        box = self.crop.as_tuple()
        blended = composite_outside_mask(
            self.backdrop.crop(box), region, self.backdrop_mask.crop(box)
        )
        result = self.backdrop.copy()
        result.paste(blended, box[:2])
        return result


def inpaint_canvas(
    image: Image.Image,
    mask: Image.Image,
    size: tuple[int, int],
    options: InpaintOptions,
) -> InpaintCanvas:
    """Prepare an inpainting job as the web UI does: blur/invert the mask, crop around it for
    "only masked", and pre-fill the hole according to the masked-content choice."""
    if options.only_masked:
        backdrop = image
        backdrop_mask = prepare_mask(mask, image.size, options.mask_blur, options.invert)
        crop = masked_region(backdrop_mask, options.padding, size)
        if crop is None:
            raise RenderInputError("the mask is empty: paint white where the picture should change")
        work = image.crop(crop.as_tuple()).resize(size, Image.Resampling.LANCZOS)
        work_mask = backdrop_mask.crop(crop.as_tuple()).resize(size, Image.Resampling.LANCZOS)
    else:
        backdrop = image.resize(size, Image.Resampling.LANCZOS)
        backdrop_mask = prepare_mask(mask, size, options.mask_blur, options.invert)
        if backdrop_mask.getbbox() is None:
            raise RenderInputError("the mask is empty: paint white where the picture should change")
        crop, work, work_mask = None, backdrop, backdrop_mask
    content = options.masked_content
    return InpaintCanvas(
        fill_masked_area(work, work_mask) if content == "fill" else work,
        work_mask,
        backdrop,
        backdrop_mask,
        crop,
        latent_fill=content if content in LATENT_FILLS else None,
    )


def grid_shape(count: int) -> tuple[int, int]:
    """The columns and rows of ``picture_grid``'s grid of ``count`` pictures, filled a row at
    a time from the top left."""
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def picture_grid(pictures: list[Image.Image]) -> Image.Image:
    """The pictures in a near-square grid (2x2 for four), cells as large as the largest."""
    columns, rows = grid_shape(len(pictures))
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * cell_w, (index // columns) * cell_h))
    return grid
