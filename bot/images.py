"""Image work the bot does itself, with Pillow only: checking uploads, grids, and shrinking
a result that is too large for Discord (pure: no discord, no torch)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from bot.compare_grid import comparison_png
from bot.image_segments import check_segment_count, png_without_metadata
from bot.infotext_import import MAX_INFOTEXT_CHARS
from bot.user_errors import UserError
from inference.compare import is_comparison
from inference.images import (
    JPEG_WITH_MORE_PICTURES,
    MAX_INPUT_SIDE,
    MIN_INPUT_SIDE,
    SIDES_SWAPPED,
    eight_bit,
    exif_orientation,
    has_wide_greys,
    picture_grid,
    upright,
)
from inference.infotext import (
    PNG_TEXT_KEY,
    format_value,
    infotext_from_png,
    png_with_infotext,
)
from inference.types import RenderRequest

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Above this a small file can still decode to gigabytes (a "decompression bomb").
MAX_UPLOAD_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# Files Pillow is not asked to read (it reads only ``ACCEPTED_FORMATS``: each other plugin's
# header parser runs in Python, and a 10 MiB GIF of comment blocks cost a second of CPU before
# its refusal), named by their first bytes in the refusal.
_REFUSED_SIGNATURES = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"8BPS": "PSD",
}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    format: str
    width: int
    height: int


def check_upload_size(name: str, size: int) -> None:
    """Refuse an attachment by its announced size, before downloading it."""
    if size > MAX_UPLOAD_BYTES:
        raise UserError(
            f"{name!r} is {size / 2**20:.1f} MiB; attach an image of at most "
            f"{MAX_UPLOAD_BYTES // 2**20} MiB."
        )


def check_image(name: str, data: bytes) -> CheckedImage:
    """Accept only a PNG, JPEG or WebP of sane size; the header is read before any decoding,
    its pieces counted before Pillow walks them (``check_segment_count``). The sides are the
    picture's as shown (``exif_orientation``). Not on the event loop: reading a header may take
    milliseconds."""
    check_upload_size(name, len(data))
    check_segment_count(name, data)
    for signature, refused_format in _REFUSED_SIGNATURES.items():
        if data.startswith(signature):
            raise UserError(
                f"{name!r} is a {refused_format} file; attach a PNG, JPEG or WebP image."
            )
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            is_jpeg = image.format == JPEG_WITH_MORE_PICTURES
            image_format = "JPEG" if is_jpeg else str(image.format)
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise UserError(
                    f"{name!r} is {width}x{height} pixels; attach an image of at most "
                    f"{MAX_UPLOAD_PIXELS:,} pixels (e.g. 4096x4096)."
                )
            if exif_orientation(image) in SIDES_SWAPPED:
                width, height = height, width
            image.verify()
    except Image.DecompressionBombError:
        raise UserError(
            f"{name!r} claims more pixels than Pillow will decode; attach an image of at most "
            f"{MAX_UPLOAD_PIXELS:,} pixels (e.g. 4096x4096)."
        ) from None
    # ValueError: Pillow's caps on what a PNG's text and ICC chunks may inflate to.
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError):
        raise _unreadable(name) from None
    return CheckedImage(data, image_format, width, height)


def check_engine_sides(image: CheckedImage, name: str) -> None:
    """Refuse a picture a job would read whose side the engine refuses
    (``inference.images.load_input_image``), before anything is queued."""
    if not all(MIN_INPUT_SIDE <= side <= MAX_INPUT_SIDE for side in (image.width, image.height)):
        raise UserError(
            f"{name!r} is {image.width}x{image.height} pixels; each side must be between "
            f"{MIN_INPUT_SIDE} and {MAX_INPUT_SIDE} pixels."
        )


def _unreadable(name: str) -> UserError:
    return UserError(f"{name!r} is not a readable image; attach a PNG, JPEG or WebP.")


def infotext_of(image: CheckedImage) -> str | None:
    return infotext_from_png(image.data) if image.format == "PNG" else None


# The bytes of pixels ``pixel_digest`` hashes at a time.
_DIGEST_STRIP_BYTES = 2**20


def pixel_digest(picture: Image.Image) -> bytes:
    """SHA-256 of a picture's pixels as 8-bit RGB, or RGBA where some pixel is not opaque,
    with its size: the same for any lossless copy (saved again without its PNG text, under
    another name, with an opaque alpha channel or a palette, as a lossless WebP), not for a
    lossy re-encode (a JPEG of it), a crop or a resize. Of the pixels it is given: an upload
    is digested as stored and as shown (``DecodedUpload.pixel_digests``). Hashed a strip of
    rows at a time (``_DIGEST_STRIP_BYTES``): a picture in the mode hashed is not copied whole
    (48 MB at 4096x4096, on the threads that read uploads)."""
    pixels = eight_bit(picture)
    if pixels.has_transparency_data:
        pixels = _in_mode(pixels, "RGBA")
        opaque = pixels.getchannel("A").getextrema() == (255, 255)
        mode = "RGB" if opaque else "RGBA"  # an opaque alpha channel: left out of each strip
    else:
        pixels = _in_mode(pixels, "RGB")
        mode = "RGB"
    digest = hashlib.sha256(f"{mode} {pixels.width}x{pixels.height}\n".encode())
    rows = max(1, _DIGEST_STRIP_BYTES // max(1, pixels.width * len(mode)))
    for top in range(0, pixels.height, rows):
        strip = pixels.crop((0, top, pixels.width, min(top + rows, pixels.height)))
        digest.update(_in_mode(strip, mode).tobytes())
    return digest.digest()


def _in_mode(picture: Image.Image, mode: str) -> Image.Image:
    """``picture`` converted to ``mode``, or itself when in it already (not a copy)."""
    return picture if picture.mode == mode else picture.convert(mode)


def pixel_digest_of(data: bytes) -> bytes:
    """``pixel_digest`` of an encoded picture (decodes it: not on the event loop)."""
    with Image.open(io.BytesIO(data)) as picture:
        return pixel_digest(picture)


@dataclass(frozen=True)
class DecodedUpload:
    image: CheckedImage  # its sides as shown (after its EXIF orientation)
    infotext: str | None  # ``infotext_of`` (its PNG keeps it only when ``bounded``)
    # ``pixel_digest`` of its pixels as stored, then as shown where its EXIF orientation turns
    # them (none when not asked for). Easel's PNGs carry no orientation: a copy of one given an
    # orientation matches as stored; one stored turned and told to turn back, as shown (the
    # pixels a job reads).
    pixel_digests: tuple[bytes, ...]
    png: bytes | None  # ``_png_from``, when asked for


def decoded_upload(name: str, data: bytes, *, digest: bool, as_png: bool) -> DecodedUpload:
    """An upload checked (``check_image``), then decoded once for its ``pixel_digests`` and its
    8-bit PNG (``_png_from``), each only when asked for: one call, on a thread (a 4096x4096 JPEG
    takes about a second). A PNG is asked for a job's input: its sides are held to the engine's
    range first (``check_engine_sides``), and a ``parameters`` text longer than
    ``MAX_INFOTEXT_CHARS`` (a zTXt chunk inflates to 1 MiB) is left out of its PNG, as
    ``/use-settings`` reads none that long; its ``infotext`` stays whole, for the reading of
    it to refuse or pass over in its own words (``bot.edits.request_from_infotext``)."""
    checked = check_image(name, data)  # before decoding anything
    if as_png:
        check_engine_sides(checked, name)
    infotext = infotext_of(checked)
    if not (digest or as_png):
        return DecodedUpload(checked, infotext, (), None)
    with Image.open(io.BytesIO(data)) as opened:
        shown = _decoded_upright(opened, name)
        # A PNG's orientation after its pixels is known only now.
        checked = dataclasses.replace(checked, width=shown.width, height=shown.height)
        return DecodedUpload(
            checked,
            infotext,
            _digests(opened, shown) if digest else (),
            _png_from(checked, opened, shown, bounded(infotext)) if as_png else None,
        )


def bounded(infotext: str | None) -> str | None:
    """``infotext`` unless it is longer than ``MAX_INFOTEXT_CHARS``: no web UI writes one
    that long, and no reading of it takes one."""
    return None if infotext is None or len(infotext) > MAX_INFOTEXT_CHARS else infotext


def _digests(opened: Image.Image, shown: Image.Image) -> tuple[bytes, ...]:
    stored = pixel_digest(opened)
    return (stored,) if shown is opened else (stored, pixel_digest(shown))


def _decoded_upright(opened: Image.Image, name: str) -> Image.Image:
    """Decode the whole picture (``check_image`` reads little of a JPEG or WebP, so a
    truncated or corrupt one fails only here), then turn it upright (``upright``)."""
    try:
        opened.load()
        return upright(opened)
    except (Image.DecompressionBombError, SyntaxError, OSError, ValueError):
        raise _unreadable(name) from None


def _png_from(
    image: CheckedImage, opened: Image.Image, shown: Image.Image, infotext: str | None
) -> bytes:
    """The upload as an 8-bit PNG, turned upright by its EXIF orientation (the engine reads
    pixels as stored), with nothing but its pixels, colours and infotext (no EXIF, other text
    or XMP: stored, and sent to workers, for as long as its jobs are kept; the engine reads
    the infotext: a fast upscale carries the picture's settings over): a PNG's own chunks of
    those (``png_without_metadata``), or a PNG with its 16-bit greys scaled to 8 bits; a JPEG
    or WebP converted."""
    if image.format == "PNG" and shown is opened and not has_wide_greys(opened):
        return png_without_metadata(image.data, infotext)
    picture = eight_bit(shown) if image.format == "PNG" else shown.convert("RGB")
    if infotext is not None:
        return png_with_infotext(picture, infotext)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def picture_size(path: Path) -> tuple[int, int]:
    """Width and height from a stored picture's header (no decoding)."""
    with Image.open(path) as image:
        return image.size


def decoded(pngs: Sequence[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]


def grid_png(pictures: Sequence[Image.Image], infotext: str) -> bytes:
    """The pictures in a near-square grid (2x2 for four), carrying ``infotext``."""
    return png_with_infotext(picture_grid(list(pictures)), infotext)


def grid_note(seeds: Sequence[int]) -> str:
    """The web UI's words for a grid, after its first picture's infotext."""
    return f"Grid: {len(seeds)} images, Grid seeds: {format_value(' '.join(map(str, seeds)))}"


def posted_as_grid(request: RenderRequest, pictures: int) -> bool:
    """Whether a job's result is posted as one picture of its pictures (else as its one)."""
    return pictures > 1 or is_comparison(request)


def posted_grid_png(
    request: RenderRequest,
    pictures: Sequence[Image.Image],
    first_infotext: str,
    seeds: Sequence[int],
) -> bytes:
    """The picture a job of several is posted as: a comparison's labelled grid, else the
    pictures in a near-square grid with the first one's infotext and the grid's note."""
    if is_comparison(request):
        return comparison_png(request, pictures, first_infotext)
    return grid_png(pictures, f"{first_infotext}, {grid_note(seeds)}")


@dataclass(frozen=True)
class Fitted:
    data: bytes
    extension: str
    is_preview: bool  # False: the same pixels (only re-compressed)


# Discord's smallest upload limit, used when a job's own limit is unknown (made before it was
# recorded).
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024


def posted_file(png: bytes, filesize_limit: int | None) -> Fitted:
    """The file a result's picture ``png`` is posted as under its job's ``filesize_limit``
    (the queue digests it when it is a preview: what a member saves must be known)."""
    return fit_under(png, filesize_limit or DEFAULT_FILESIZE_LIMIT)


# The oversized pictures fitted last (``fit_under``), by their PNG's SHA-256 and the limit:
# the queue fits a result to digest its preview (``bot.jobs.queue.ends.posted_digests``), and
# its delivery fits the same picture moments later (seconds of CPU for a large grid), as does
# a member's /show of it again. Bounded by their bytes: a fit under a Nitro limit is 100 MB.
FITS_KEPT_BYTES = 64 * 1024 * 1024
_fits_kept: OrderedDict[tuple[bytes, int], Fitted] = OrderedDict()
_fits_kept_lock = threading.Lock()  # ``fit_under`` runs on threads


def fit_under(png: bytes, limit: int) -> Fitted:
    """The PNG as is, else optimised, else a smaller JPEG preview that fits under ``limit``;
    one of the last fitted under ``limit`` (``FITS_KEPT_BYTES`` of them) is not fitted again."""
    if len(png) <= limit:
        return Fitted(png, "png", is_preview=False)
    key = (hashlib.sha256(png).digest(), limit)
    with _fits_kept_lock:
        kept = _fits_kept.get(key)
        if kept is not None:
            _fits_kept.move_to_end(key)
            return kept
    fitted = _fitted_anew(png, limit)
    with _fits_kept_lock:
        _fits_kept[key] = fitted
        held = sum(len(one.data) for one in _fits_kept.values())
        while held > FITS_KEPT_BYTES:
            _, oldest = _fits_kept.popitem(last=False)
            held -= len(oldest.data)
    return fitted


def _fitted_anew(png: bytes, limit: int) -> Fitted:
    with Image.open(io.BytesIO(png)) as image:
        infotext = image.info.get(PNG_TEXT_KEY)
        rgb = image.convert("RGB")
    optimised = io.BytesIO()
    metadata = PngInfo()
    if isinstance(infotext, str):
        metadata.add_text(PNG_TEXT_KEY, infotext)
    rgb.save(optimised, format="PNG", optimize=True, compress_level=9, pnginfo=metadata)
    if optimised.tell() <= limit:
        return Fitted(optimised.getvalue(), "png", is_preview=False)
    preview = rgb
    while True:
        buffer = io.BytesIO()
        preview.save(buffer, format="JPEG", quality=80)
        if buffer.tell() <= limit or min(preview.size) <= 16:
            return Fitted(buffer.getvalue(), "jpg", is_preview=True)
        half = (preview.width // 2, preview.height // 2)
        preview = preview.resize(half, Image.Resampling.LANCZOS)
