"""bot.images: upload checks, PNG conversion, grids and fitting under an upload limit."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from bot.history import StoredJob
from bot.images import (
    MAX_UPLOAD_BYTES,
    check_image,
    check_upload_size,
    decoded,
    decoded_upload,
    fit_under,
    grid_png,
    pixel_digest,
)
from bot.infotext_import import MAX_INFOTEXT_CHARS
from bot.jobs.queue import FinishedJob, ResultImage
from bot.jobs.queue.ends import composed_grid
from bot.user_errors import UserError
from cogs.results.buttons import copy_caption, picture_caption
from cogs.results.posting import caption
from inference.infotext import PNG_TEXT_KEY, infotext_from_png, parse_infotext, png_with_infotext
from inference.types import RenderedImage, RenderRequest
from tests.support.exif_pictures import exif_after_pixels

INFOTEXT = "a cat\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 32x32"


def picture(color: str = "red", size: tuple[int, int] = (32, 32)) -> bytes:
    return png_with_infotext(Image.new("RGB", size, color), INFOTEXT)


def png_claiming(width: int, height: int) -> bytes:
    data = bytearray(picture())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_check_image_accepts_a_png_and_reports_its_size() -> None:
    checked = check_image("cat.png", picture())
    assert (checked.format, checked.width, checked.height) == ("PNG", 32, 32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a not really", "is a GIF file"),
        (b"hello", "not a readable image"),
        (png_claiming(5000, 5000), "5000x5000 pixels"),
        (png_claiming(60000, 60000), "more pixels than Pillow will decode"),
    ],
)
def test_hostile_uploads_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_image("upload.png", data)


def test_a_truncated_jpeg_is_refused_as_unreadable_when_decoded() -> None:
    """check_image's verify() reads little of a JPEG: the decode must refuse it the same way."""
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG")
    half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    check_image("cut.jpg", half)  # passes the header check
    with pytest.raises(UserError, match=r"'cut\.jpg' is not a readable image"):
        decoded_upload("cut.jpg", half, digest=True, as_png=False)
    # Converted to a job's PNG: the same refusal.
    with pytest.raises(UserError, match=r"'mask\.png' is not a readable image"):
        as_png("mask.png", half)


def test_gif_is_refused_by_format() -> None:
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, format="GIF")
    with pytest.raises(UserError, match="is a GIF file; attach a PNG, JPEG or WebP"):
        check_image("anim.gif", buffer.getvalue())


def test_other_formats_are_refused_by_name_before_pillow_parses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pillow reads only the accepted formats: another plugin's header parser (Python, a
    second for a 10 MiB GIF of comment blocks) never runs on an upload."""
    parsed: list[str] = []

    def counted(image: GifImagePlugin.GifImageFile) -> None:
        parsed.append("GIF")
        raise SyntaxError("not asked")

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", counted)
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, format="GIF")
    for name, data in (("anim.gif", buffer.getvalue()), ("renamed.png", b"GIF87a" + bytes(64))):
        with pytest.raises(UserError, match=f"'{name}' is a GIF file; attach a PNG, JPEG or WebP"):
            check_image(name, data)
    assert parsed == []


def test_a_jpeg_with_a_multi_picture_index_is_read_as_a_jpeg_of_its_first_picture() -> None:
    """Some phones and cameras save a JPEG with an MPF index, which Pillow opens as "MPO"."""
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (32, 32), "blue")
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    checked = check_image("phone.jpg", buffer.getvalue())
    assert (checked.format, checked.width, checked.height) == ("JPEG", 64, 48)
    upload = decoded_upload("phone.jpg", buffer.getvalue(), digest=False, as_png=True)
    assert upload.png is not None
    with Image.open(io.BytesIO(upload.png)) as png:
        red, _, blue = np.asarray(png.convert("RGB")).mean(axis=(0, 1))
    assert png.size == (64, 48) and red > 200 and blue < 50  # the first picture, not the blue


# Orientation 6: a viewer turns the stored pixels 90 degrees clockwise (a phone held upright).
TURNED_CLOCKWISE = 6


def sideways_photo(
    format: str = "JPEG", *, after_pixels: bool = False, exif: bytes | None = None
) -> bytes:
    """A 40x20 picture stored as a phone's camera reads it, red on its left half, with EXIF
    orientation 6 (or ``exif``): shown as 20x40, red on the top half."""
    stored = Image.new("RGB", (40, 20), "blue")
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    if exif is None:
        fields = Image.Exif()
        fields[0x0112] = TURNED_CLOCKWISE
        exif = fields.tobytes()
    buffer = io.BytesIO()
    stored.save(buffer, format=format, exif=exif, quality=95)
    return exif_after_pixels(buffer.getvalue()) if after_pixels else buffer.getvalue()


def red_share_of_halves(png: bytes) -> tuple[float, float]:
    """How red the top and bottom halves of a picture are (0 to 1)."""
    with Image.open(io.BytesIO(png)) as image:
        red = np.asarray(image.convert("RGB"))[:, :, 0] / 255
    half = red.shape[0] // 2
    return float(red[:half].mean()), float(red[half:].mean())


@pytest.mark.parametrize(
    ("format", "after_pixels"),
    [("JPEG", False), ("WEBP", False), ("PNG", False), ("PNG", True)],
    ids=["jpeg", "webp", "png", "png-exif-after-pixels"],
)
def test_an_upload_is_read_upright_by_its_exif_orientation(format: str, after_pixels: bool) -> None:
    data = sideways_photo(format, after_pixels=after_pixels)
    if not after_pixels:  # from the header alone, before decoding
        checked = check_image("phone.img", data)
        assert (checked.width, checked.height) == (20, 40)
    upload = decoded_upload("phone.img", data, digest=True, as_png=True)
    assert upload.png is not None
    assert (upload.image.width, upload.image.height) == (20, 40)
    top, bottom = red_share_of_halves(upload.png)
    assert top > 0.9 and bottom < 0.1
    with Image.open(io.BytesIO(upload.png)) as png:
        assert png.size == (20, 40) and "exif" not in png.info  # not turned a second time
    # Digested as stored (a copy of a picture given an orientation, one EXIF field, is still
    # recognised) and as shown (a copy stored turned, told to turn back: the pixels a job reads).
    with Image.open(io.BytesIO(data)) as stored, Image.open(io.BytesIO(upload.png)) as shown:
        assert upload.pixel_digests == (pixel_digest(stored), pixel_digest(shown))


def test_a_picture_without_orientation_is_digested_once() -> None:
    upload = decoded_upload("a.png", picture(), digest=True, as_png=False)
    with Image.open(io.BytesIO(picture())) as stored:
        assert upload.pixel_digests == (pixel_digest(stored),)


@pytest.mark.parametrize("format", ["PNG", "WEBP"])  # a JPEG's EXIF is parsed at open
@pytest.mark.parametrize(
    "exif",
    [b"Exif\0\0MM\0*", b"Exif\0\0garbage!"],
    ids=["short-tiff-header", "not-tiff"],
)
def test_an_exif_pillow_cannot_parse_gives_no_orientation(format: str, exif: bytes) -> None:
    """Viewers show such a picture as stored; Pillow decodes it (it was refused as unreadable,
    or crashed the upload, when a PNG's or a WebP's EXIF was parsed unguarded)."""
    data = sideways_photo(format, exif=exif)
    checked = check_image("odd.img", data)
    assert (checked.width, checked.height) == (40, 20)
    upload = decoded_upload("odd.img", data, digest=True, as_png=True)
    assert upload.png is not None and (upload.image.width, upload.image.height) == (40, 20)
    assert len(upload.pixel_digests) == 1


def test_an_exif_pillow_cannot_write_again_still_turns_the_picture() -> None:
    """ImageWidth stored as bytes, then the orientation: ``ImageOps.exif_transpose`` raised
    writing that EXIF again (for its result, which Easel does not keep)."""
    fields = [(0x0100, 7, 4, 0x61616161), (0x0112, 3, 1, TURNED_CLOCKWISE)]
    tiff = b"II*\0" + struct.pack("<IH", 8, len(fields))
    tiff += b"".join(struct.pack("<HHII", *field) for field in fields) + bytes(4)
    upload = decoded_upload(
        "odd.jpg", sideways_photo(exif=b"Exif\0\0" + tiff), digest=False, as_png=True
    )
    assert upload.png is not None and (upload.image.width, upload.image.height) == (20, 40)
    top, bottom = red_share_of_halves(upload.png)
    assert top > 0.9 and bottom < 0.1


def test_a_mask_is_turned_like_the_picture_it_masks() -> None:
    """A mask saved with the photo's orientation lines up with the photo as shown."""
    mask = as_png("mask.jpg", sideways_photo())
    top, bottom = red_share_of_halves(mask)
    assert top > 0.9 and bottom < 0.1


def test_announced_size_is_checked_before_download() -> None:
    with pytest.raises(UserError, match="at most 10 MiB"):
        check_upload_size("huge.png", MAX_UPLOAD_BYTES + 1)


def test_grid_places_four_pictures_two_by_two_with_the_infotext() -> None:
    colors = ["red", "green", "blue", "white"]
    grid = grid_png(decoded([picture(c) for c in colors]), INFOTEXT + ", Grid: 4 images")
    with Image.open(io.BytesIO(grid)) as image:
        assert image.size == (64, 64)
        rgb = image.convert("RGB")
        assert rgb.getpixel((0, 0)) == (255, 0, 0)
        assert rgb.getpixel((63, 0)) == (0, 128, 0)
        assert rgb.getpixel((0, 63)) == (0, 0, 255)
        assert rgb.getpixel((63, 63)) == (255, 255, 255)
    assert infotext_from_png(grid) == INFOTEXT + ", Grid: 4 images"


def test_a_job_s_png_keeps_a_png_and_converts_a_jpeg() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    png = buffer.getvalue()  # pixels alone: nothing to leave out
    assert as_png("a.png", png) == png
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), "blue").save(buffer, format="JPEG")
    converted = as_png("a.jpg", buffer.getvalue())
    with Image.open(io.BytesIO(converted)) as image:
        assert (image.format, image.size) == ("PNG", (16, 8))


def png_chunk_types(png: bytes) -> list[bytes]:
    types, position = [], 8
    while position < len(png):
        (length,) = struct.unpack_from(">I", png, position)
        types.append(png[position + 4 : position + 8])
        position += 12 + length
    return types


@pytest.mark.parametrize("orientation", [1, TURNED_CLOCKWISE], ids=["upright", "turned"])
def test_a_job_s_png_leaves_out_exif_text_and_xmp_and_keeps_pixels_and_colours(
    orientation: int,
) -> None:
    """A PNG upload is stored (and sent to workers) without its EXIF (a GPS position), other
    text and XMP, with its infotext (the engine reads it of the stored copy). Upright: its own
    chunks, undecoded."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (47.0, 22.0, 1.0), 3: "E", 4: (8.0, 32.0, 2.0)}  # GPS
    metadata = PngInfo()
    metadata.add_text(PNG_TEXT_KEY, INFOTEXT)
    metadata.add_text("Comment", "taken at home", zip=True)  # zTXt
    metadata.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>at home</x:xmpmeta>")
    metadata.add_itxt("Title", "Zuhause", lang="de")
    stored = Image.new("RGB", (40, 20), "blue")
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    buffer = io.BytesIO()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    stored.save(buffer, format="PNG", pnginfo=metadata, exif=exif, icc_profile=icc)
    data = buffer.getvalue()
    assert {b"eXIf", b"tEXt", b"zTXt", b"iTXt"} <= set(png_chunk_types(data))

    upload = decoded_upload("home.png", data, digest=False, as_png=True)
    assert upload.png is not None and upload.infotext == INFOTEXT
    assert set(png_chunk_types(upload.png)) <= {b"IHDR", b"iCCP", b"tEXt", b"IDAT", b"IEND"}
    assert infotext_from_png(upload.png) == INFOTEXT
    for text in (b"home", b"Zuhause", b"Exif", b"GPS"):
        assert text not in upload.png
    with Image.open(io.BytesIO(data)) as came, Image.open(io.BytesIO(upload.png)) as kept:
        assert kept.info.get("icc_profile") == icc
        shown = came if orientation == 1 else came.transpose(Image.Transpose.ROTATE_270)
        assert np.array_equal(np.asarray(kept), np.asarray(shown.convert("RGB")))


def png_with_texts(*texts: tuple[str, bool]) -> bytes:
    """A PNG carrying each (``parameters`` text, compressed) in turn, before its pixels."""
    metadata = PngInfo()
    for text, compressed in texts:
        metadata.add_text(PNG_TEXT_KEY, text, zip=compressed)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG", pnginfo=metadata)
    return buffer.getvalue()


def test_a_job_s_png_keeps_one_parameters_text_of_at_most_the_length_read() -> None:
    """A ``parameters`` text is kept up to ``MAX_INFOTEXT_CHARS`` (as /use-settings reads one):
    a longer one (a zTXt chunk inflates to 1 MiB) is left out of a job's stored input, which is
    still taken, as a picture without parameters; the bot reads it whole, for its refusal to
    name the prompt's length (``request_from_infotext``). The stored copy carries the one text
    the bot read, however many the upload had."""
    longest = "a cat\nSteps: 3, Seed: 5, Size: 32x32" + "," * MAX_INFOTEXT_CHARS
    longest = longest[:MAX_INFOTEXT_CHARS]
    too_long = longest + ","
    for uploaded, read, kept in (
        (png_with_texts((too_long, True)), too_long, None),
        (png_with_texts((longest, True)), longest, longest),
        (png_with_texts((too_long, False)), too_long, None),
        # Pillow reads the last.
        (png_with_texts((too_long, True), (INFOTEXT, False)), INFOTEXT, INFOTEXT),
        (png_with_texts((INFOTEXT, False), (too_long, True)), too_long, None),
    ):
        upload = decoded_upload("big.png", uploaded, digest=False, as_png=True)
        assert upload.png is not None and upload.infotext == read
        assert infotext_from_png(upload.png) == kept
        texts = [t for t in png_chunk_types(upload.png) if t in (b"tEXt", b"zTXt", b"iTXt")]
        assert texts == ([] if kept is None else [b"tEXt"])
    # Only read, not kept (/info, /use-settings): whole, for their own refusal to name its length.
    shown = decoded_upload("big.png", png_with_texts((too_long, True)), digest=False, as_png=False)
    assert shown.infotext == too_long


def test_fit_under_keeps_small_files_and_previews_big_ones() -> None:
    small = picture()
    assert fit_under(small, len(small)).data == small
    noisy = Image.effect_noise((256, 256), 100).convert("RGB")
    big = png_with_infotext(noisy, INFOTEXT)
    fitted = fit_under(big, 8_000)
    assert fitted.is_preview and fitted.extension == "jpg" and len(fitted.data) <= 8_000


def as_png(name: str, data: bytes) -> bytes:
    """The 8-bit PNG a job reads of an upload."""
    png = decoded_upload(name, data, digest=False, as_png=True).png
    assert png is not None
    return png


def test_a_batch_past_32_bits_names_the_seeds_its_pictures_rendered_at() -> None:
    """A batch from 4294967294 renders at 4294967294...4294967297, as the web UI counts:
    the grid's note and the caption name those, as each picture's text does."""
    made_at = written = [4294967294, 4294967295, 4294967296, 4294967297]
    texts = [f"a fox\nSteps: 3, Sampler: Euler, Seed: {seed}, Size: 8x8" for seed in written]
    pixels = Image.new("RGB", (8, 8), "red")
    rendered = [
        RenderedImage(png_with_infotext(pixels, text), seed, text, 8, 8, picture=pixels)
        for seed, text in zip(made_at, texts, strict=True)
    ]
    request = RenderRequest("a fox", seed=made_at[0], count=4)
    grid = composed_grid(request, rendered)
    assert grid is not None
    grid_text = infotext_from_png(grid)
    assert grid_text is not None
    assert parse_infotext(grid_text)[2]["Grid seeds"] == " ".join(map(str, written))
    job = FinishedJob(
        job_id="0" * 32,
        kind="imagine",
        succeeded=True,
        error=None,
        request=request,
        user_id=1,
        guild_id=2,
        channel_id=3,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=tuple(
            ResultImage(Path("unread.png"), seed, text)
            for seed, text in zip(made_at, texts, strict=True)
        ),
    )
    assert "(seed 4294967294, 4294967295, 4294967296, 4294967297, job" in caption(job)
    # Its pictures posted again name them alike: alone (U3), copied (DM me), /show.
    stored = StoredJob("j", 1, 2, False, False, "done", "a fox", [], made_at, texts)
    assert picture_caption(stored, 2) == "Picture 3 of `j` (seed 4294967296)"
    assert copy_caption(stored, [3]).endswith("picture 4 of job `j` (seed 4294967297)")
    assert copy_caption(stored).endswith("(seed 4294967294, 4294967295, 4294967296, 4294967297)")
