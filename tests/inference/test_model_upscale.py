"""Model upscalers through spandrel: random-weight ESRGANs written like any download."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SwinIR import SwinIR

from inference.engine import Engine
from inference.infotext import format_infotext, parse_infotext, png_with_infotext
from inference.model_upscale import (
    _passes_needed,
    load_upscaler,
    model_upscale,
    upscale_tiled,
)
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_upscaler
from inference.types import (
    RenderCancelled,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)
from tests.inference.conftest import TINY, PixelReader
from tests.inference.test_checkpoints import WritesAMarker

X4, X2 = "tiny-esrgan-4x", "tiny-esrgan-2x"


@pytest.fixture(scope="module")
def upscaler_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny checkpoint plus a 4x upscaler in ``upscalers/`` and a 2x one in the
    web UI's ``ESRGAN/`` folder."""
    directory = tmp_path_factory.mktemp("upscaler-models")
    (directory / TINY).symlink_to(models_dir / TINY)
    write_tiny_upscaler(directory / "upscalers", scale=4)
    write_tiny_upscaler(directory / "ESRGAN", scale=2, seed=1)
    return directory


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    """A 40x24 picture with structure (a gradient and a bright square) and infotext."""
    path = tmp_path / "result.png"
    values = np.linspace(0, 255, 24 * 40 * 3).reshape(24, 40, 3).astype(np.uint8)
    values[6:14, 10:20] = 255
    infotext = format_infotext("a lighthouse", "", {"Steps": 20, "Seed": 77, "Size": "40x24"})
    path.write_bytes(png_with_infotext(Image.fromarray(values), infotext))
    return path


def _upscale(picture: Path, **options: object) -> RenderRequest:
    return RenderRequest("", mode="upscale", init_image=str(picture), options=dict(options))


def test_random_weight_esrgan_upscales_4x(
    upscaler_models: Path, picture: Path, pixels: PixelReader
) -> None:
    engine = Engine(upscaler_models)
    [image] = engine.render(_upscale(picture, upscale_factor=4, upscaler=X4))
    assert (image.width, image.height) == (160, 96)
    prompt, _, params = parse_infotext(image.infotext)
    assert (prompt, params["Seed"]) == ("a lighthouse", 77)
    assert (params["Postprocess upscale by"], params["Postprocess upscaler"]) == (4, X4)
    lanczos = engine.render(_upscale(picture, upscale_factor=4, upscaler="Lanczos"))[0]
    assert np.abs(pixels(image.png) - pixels(lanczos.png)).mean() > 5  # the model did it
    again = engine.render(_upscale(picture, upscale_factor=4, upscaler=X4))[0]
    assert again.png == image.png


def test_the_default_upscaler_is_the_setting_else_the_first_model(
    upscaler_models: Path, picture: Path
) -> None:
    def used(engine: Engine) -> object:
        [image] = engine.render(_upscale(picture, upscale_factor=2))
        return parse_infotext(image.infotext)[2]["Postprocess upscaler"]

    assert used(Engine(upscaler_models)) == X2  # first in name order
    assert used(Engine(upscaler_models, default_upscaler=X4)) == X4
    assert used(Engine(upscaler_models, default_upscaler="lanczos")) == "Lanczos"


def test_a_model_of_another_scale_reaches_the_size_asked_for(
    upscaler_models: Path, picture: Path
) -> None:
    engine = Engine(upscaler_models)
    # 2x model asked for 4x: two passes; 4x model asked for 2x: one pass, then Lanczos down.
    for factor, name in ((4, X2), (2, X4)):
        [image] = engine.render(_upscale(picture, upscale_factor=factor, upscaler=name))
        assert (image.width, image.height) == (40 * factor, 24 * factor)
    assert [_passes_needed((40, 24), (160, 96), scale) for scale in (2, 4)] == [2, 1]
    assert _passes_needed((40, 24), (40, 24), 4) == 0
    assert _passes_needed((10, 10), (10_000, 10_000), 2) == 3  # at most three passes


def test_tiles_blend_into_the_untiled_result(upscaler_models: Path) -> None:
    upscaler = load_upscaler(X4, upscaler_models / "upscalers" / f"{X4}.safetensors", "cpu")
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    whole = np.asarray(upscale_tiled(upscaler, image, 1000, 0), dtype=np.int16)
    counted: list[tuple[int, int]] = []
    tiled_image = upscale_tiled(upscaler, image, 32, 8, on_tile=lambda *done: counted.append(done))
    tiled = np.asarray(tiled_image, dtype=np.int16)
    assert counted[-1] == (12, 12)  # 3 rows x 4 columns of tiles of at most 32 pixels
    assert tiled.shape == whole.shape == (320, 384, 3)
    # Overlapping tiles cross-faded: no seam differs by more than one level from the whole.
    assert np.abs(tiled - whole).max() <= 1


def test_cancel_stops_between_tiles(upscaler_models: Path) -> None:
    upscaler = load_upscaler(X2, upscaler_models / "ESRGAN" / f"{X2}.safetensors", "cpu")
    cancel = threading.Event()
    done: list[int] = []

    def on_tile(finished: int, _total: int) -> None:
        done.append(finished)
        cancel.set()

    image = Image.new("RGB", (100, 100), "gray")
    with pytest.raises(RenderCancelled):
        model_upscale(
            upscaler, image, (200, 200), tile=32, overlap=4, cancel=cancel, on_tile=on_tile
        )
    assert done == [1]


def test_progress_counts_tiles(upscaler_models: Path, tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (600, 300), "teal").save(path)
    reports: list[StepProgress] = []
    engine = Engine(upscaler_models)
    engine.render(_upscale(path, upscale_factor=2, upscaler=X2), progress=reports.append)
    assert [(r.step, r.total_steps) for r in reports] == [(step, 6) for step in range(1, 7)]


def test_hires_fix_can_use_a_model_upscaler(upscaler_models: Path) -> None:
    request = RenderRequest(
        "a cat",
        seed=3,
        steps=2,
        width=64,
        height=64,
        options={"hires_scale": 2, "hires_denoising": 0.5, "hires_upscaler": X4},
    )
    [image] = Engine(upscaler_models).render(request)
    assert (image.width, image.height) == (128, 128)
    assert parse_infotext(image.infotext)[2]["Hires upscaler"] == X4


def test_upscalers_are_found_in_easel_and_web_ui_folders(upscaler_models: Path) -> None:
    registry = ModelRegistry(upscaler_models)
    assert registry.upscaler_names() == ["Lanczos", X2, X4]
    assert registry.resolve_upscaler("TINY-ESRGAN-4X")[0] == X4
    assert registry.resolve_upscaler("LANCZOS") == ("Lanczos", None)
    with pytest.raises(RenderInputError, match=r"^unknown upscaler 'x': it is not installed on"):
        registry.resolve_upscaler("x")


def test_pickled_upscalers_need_the_admins_permission(tmp_path: Path, picture: Path) -> None:
    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    (tmp_path / "RealESRGAN").mkdir()
    torch.save(model.state_dict(), tmp_path / "RealESRGAN" / "pickled-2x.pth")
    assert ModelRegistry(tmp_path).upscaler_names() == ["Lanczos"]
    with pytest.raises(RenderInputError, match=r"pickle file \(pickled-2x.pth\).*ALLOW_PICKLE"):
        Engine(tmp_path).render(_upscale(picture, upscaler="pickled-2x"))
    # Allowed: loaded through torch's restricted (weights-only) unpickler.
    [image] = Engine(tmp_path, allow_pickle=True).render(_upscale(picture, upscaler="pickled-2x"))
    assert (image.width, image.height) == (80, 48)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")  # writing the archive
def test_pickled_upscalers_load_weights_only_never_as_torchscript(
    tmp_path: Path, picture: Path, pixels: PixelReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_torchscript(*_: object, **__: object) -> None:
        raise AssertionError("torch.jit.load runs the archive's code: never called")

    monkeypatch.setattr(torch.jit, "load", no_torchscript)
    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).eval()
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "weights.safetensors"))
    torch.save(model.state_dict(), folder / "as-pth.pth")
    torch.save({"params_ema": model.state_dict()}, folder / "as-pt.pt")  # Real-ESRGAN's nesting
    scripted = torch.jit.trace(model, torch.zeros(1, 3, 16, 16))  # type: ignore[no-untyped-call]
    scripted.save(str(folder / "scripted.pt"))
    marker = tmp_path / "code-ran"
    torch.save({"params": model.state_dict(), "x": WritesAMarker(marker)}, folder / "evil.pth")
    engine = Engine(tmp_path, allow_pickle=True)
    [expected] = engine.render(_upscale(picture, upscaler="weights"))
    for name in ("as-pth", "as-pt"):
        [image] = engine.render(_upscale(picture, upscaler=name))
        assert np.array_equal(pixels(image.png), pixels(expected.png))
    with pytest.raises(RenderInputError, match=r"scripted\.pt is a TorchScript archive"):
        engine.render(_upscale(picture, upscaler="scripted"))
    with pytest.raises(RenderInputError, match=r"evil\.pth holds more than weights.*refused"):
        engine.render(_upscale(picture, upscaler="evil"))
    assert not marker.exists()


def test_files_that_are_not_upscalers_are_refused(tmp_path: Path, picture: Path) -> None:
    folder = tmp_path / "upscalers"
    folder.mkdir()
    save_file({"weight": torch.zeros(3, 3)}, str(folder / "mystery.safetensors"))
    restoration = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=1)
    save_file(restoration.state_dict(), str(folder / "denoise-1x.safetensors"))
    engine = Engine(tmp_path)
    with pytest.raises(RenderInputError, match=r"mystery.*not an architecture spandrel recognises"):
        engine.render(_upscale(picture, upscaler="mystery"))
    with pytest.raises(RenderInputError, match=r"denoise-1x.*at scale 1, not an upscaler"):
        engine.render(_upscale(picture, upscaler="denoise-1x"))


def test_an_upscaler_giving_not_a_number_fails_naming_it(tmp_path: Path, picture: Path) -> None:
    """A file of NaN weights upscales to NaN pixels, which would be delivered black."""
    good = load_file(str(write_tiny_upscaler(tmp_path / "made", scale=2)))
    nan = {k: v.fill_(torch.nan) if v.is_floating_point() else v for k, v in good.items()}
    (tmp_path / "upscalers").mkdir()
    save_file(nan, str(tmp_path / "upscalers" / "nan-2x.safetensors"))
    with pytest.raises(RenderFailed) as failed:
        Engine(tmp_path).render(_upscale(picture, upscale_factor=2, upscaler="nan-2x"))
    assert str(failed.value) == (
        "upscaler 'nan-2x' (nan-2x.safetensors) gave not-a-number or infinite values, a blank "
        "picture: its file may be broken; try another upscaler, or ask an admin to check it"
    )


def test_an_unknown_upscaler_fails_before_any_work(tmp_path: Path, picture: Path) -> None:
    request = _upscale(picture, upscale_factor=2, upscaler="4x-UltraSharp")
    with pytest.raises(RenderInputError, match="unknown upscaler '4x-UltraSharp'"):
        Engine(tmp_path).render(request)
    with pytest.raises(RenderInputError, match="upscaler must be an upscaler's name"):
        Engine(tmp_path).render(dataclasses.replace(request, options={"upscaler": 4}))


def test_a_replaced_upscaler_file_is_loaded_again(tmp_path: Path, picture: Path) -> None:
    path = write_tiny_upscaler(tmp_path / "upscalers", scale=2, seed=1)
    engine = Engine(tmp_path)
    request = _upscale(picture, upscaler=X2)
    before = engine.render(request)[0].png
    assert engine.render(request)[0].png == before  # kept while the file is the same
    write_tiny_upscaler(tmp_path / "upscalers", scale=2, seed=2)
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 1))
    assert engine.render(request)[0].png != before


def test_another_architecture_swinir_from_the_web_ui_folder(tmp_path: Path, picture: Path) -> None:
    """spandrel brings every architecture it knows: a tiny random SwinIR (windows of 4, a
    minimum input of 16) in the web UI's SwinIR/ folder, tiled at sizes that are not
    multiples of its window."""
    torch.manual_seed(0)
    network = SwinIR(
        img_size=16,
        embed_dim=12,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        mlp_ratio=2,
        upscale=2,
        upsampler="pixelshuffledirect",
    )
    (tmp_path / "SwinIR").mkdir()
    path = tmp_path / "SwinIR" / "swinir-2x.safetensors"
    save_file({key: value.contiguous() for key, value in network.state_dict().items()}, str(path))
    [image] = Engine(tmp_path).render(_upscale(picture, upscale_factor=2, upscaler="swinir-2x"))
    assert (image.width, image.height) == (80, 48)
    upscaler = load_upscaler("swinir-2x", path, "cpu")
    whole = upscale_tiled(upscaler, Image.open(picture).convert("RGB"), 1000, 0)
    tiled = upscale_tiled(upscaler, Image.open(picture).convert("RGB"), 22, 6)
    assert tiled.size == whole.size == (80, 48)
