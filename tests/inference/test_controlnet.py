"""ControlNet through the real engine with tiny random models: the ControlNet file loads
offline from the web UI's layout, steers txt2img / img2img / inpaint, sees the UNet's own
per-row conditioning, and records itself in the infotext."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from safetensors.torch import save_file

from inference.controlnet import load_controlnet, shipped_config
from inference.engine import Engine
from inference.infotext import infotext_from_png, parse_infotext
from inference.preprocessors import canny, depth
from inference.tiny import (
    controlnet_to_ldm,
    write_tiny_controlnet,
    write_tiny_depth_annotator,
    write_tiny_model,
)
from inference.types import ALLOWED_CONTROLNETS_OPTION, RenderInputError, RenderRequest
from tests.support.control_infotext import parse_control_infotext


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (SD1.5) and ``tiny-xl`` (SDXL), each with its tiny ControlNet."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_controlnet(write_tiny_model(directory / "tiny"))
    write_tiny_controlnet(write_tiny_model(directory / "tiny-xl", family="sdxl"))
    return directory


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(models)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A white disk on black: a picture with clear edges."""
    path = tmp_path_factory.mktemp("maps") / "disk.png"
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), fill="white")
    picture.save(path)
    return str(path)


def pixels(engine: Engine, **changes: Any) -> np.ndarray:
    return pixels_and_infotext(engine, **changes)[0]


# Renders are deterministic: one asked for again (the plain picture...) is not re-run.
_rendered: dict[str, tuple[np.ndarray, str]] = {}


def pixels_and_infotext(engine: Engine, **changes: Any) -> tuple[np.ndarray, str]:
    fields: dict[str, Any] = {"seed": 5, "steps": 3, "width": 64, "height": 64, "model": "tiny"}
    key = repr(sorted(changes.items()))
    if key not in _rendered:
        [image] = engine.render(RenderRequest("a cat", **{**fields, **changes}))
        with Image.open(io.BytesIO(image.png)) as picture:
            png_infotext = infotext_from_png(image.png)
            assert png_infotext is not None
            _rendered[key] = np.asarray(picture, dtype=np.int16), png_infotext
    return _rendered[key]


def controlled(image: str, **unit: Any) -> dict[str, Any]:
    return {"controlnet": [{"module": "canny", "image": image, **unit}]}


def test_the_sd15_file_is_in_the_web_ui_layout_and_loads_exactly(models: Path) -> None:
    path = models / "ControlNet" / "tiny-controlnet.safetensors"
    with safe_open(str(path), framework="pt") as weights:
        names = list(weights.keys())
        stored = {name: weights.get_tensor(name) for name in names}
    assert all(name.startswith("control_model.") for name in names)
    assert "control_model.input_hint_block.0.weight" in names
    loaded = load_controlnet(path, torch.float32)
    again = controlnet_to_ldm(loaded.state_dict(), loaded.config)
    assert again.keys() == stored.keys()
    assert all(torch.equal(again[name], stored[name]) for name in names)


def test_control_steers_the_picture_and_weight_zero_is_no_control(
    engine: Engine, disk: str
) -> None:
    plain = pixels(engine)
    steered = pixels(engine, options=controlled(disk))
    assert np.abs(steered - plain).mean() > 2
    assert np.array_equal(pixels(engine, options=controlled(disk, weight=0.0)), plain)
    # A window that opens after the last step is no control either; the first step alone is.
    assert np.array_equal(pixels(engine, options=controlled(disk, guidance_start=1.0)), plain)
    first_step = pixels(engine, options=controlled(disk, guidance_end=0.0))
    assert not np.array_equal(first_step, plain) and not np.array_equal(first_step, steered)


def test_two_controlnets_add_their_residuals(engine: Engine, disk: str) -> None:
    whole = pixels(engine, options=controlled(disk))
    halves = {"module": "canny", "image": disk, "weight": 0.5}
    split = pixels(engine, options={"controlnet": [halves, halves]})
    assert np.abs(split - whole).max() <= 1  # 0.5 r + 0.5 r = r, up to float rounding


def test_img2img_and_inpaint_are_steered_too(engine: Engine, disk: str, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (90, 140, 200)).save(init)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    for changes in (
        {"mode": "img2img", "init_image": str(init), "denoising_strength": 0.8},
        {"mode": "inpaint", "init_image": str(init), "mask_image": str(mask)},
    ):
        plain = pixels(engine, **changes)
        steered = pixels(engine, **changes, options=controlled(disk))
        assert np.abs(steered - plain).mean() > 2, changes["mode"]


@pytest.mark.parametrize("model", ["tiny", "tiny-xl"])
def test_the_controlnet_sees_the_unet_s_own_rows_and_conditioning(
    models: Path, disk: str, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a composed prompt (AND) the guidance evaluates more rows than the pipeline sends;
    the ControlNet must get the same rows, text states and SDXL embeddings as the UNet."""
    seen: dict[str, list[dict[str, Any]]] = {"controlnet": [], "unet": []}

    def spy(name: str) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            added = kwargs.get("added_cond_kwargs") or {}
            seen[name].append({"sample": args[0].clone(), "hidden": hidden.clone(), **added})

        return hook

    def spied_load(path: Path, dtype: torch.dtype) -> Any:
        controlnet = load_controlnet(path, dtype)
        controlnet.register_forward_pre_hook(spy("controlnet"), with_kwargs=True)
        return controlnet

    monkeypatch.setattr("inference.controlnet.load_controlnet", spied_load)
    engine = Engine(models)  # its own copies of the models, spied on
    loaded = engine.models.load(engine.registry.resolve(model))
    loaded.pipeline.unet.register_forward_pre_hook(spy("unet"), with_kwargs=True)
    engine.render(
        RenderRequest(
            "a cat AND a dog:0.7",
            seed=2,
            steps=3,
            width=64,
            height=64,
            model=model,
            options=controlled(disk),
        )
    )
    assert len(seen["unet"]) == len(seen["controlnet"]) == 3
    for unet_call, control_call in zip(seen["unet"], seen["controlnet"], strict=True):
        assert unet_call["sample"].shape[0] == 3  # uncond + two sub-prompts
        assert unet_call.keys() == control_call.keys()
        for key, value in unet_call.items():
            assert torch.equal(value, control_call[key]), key


def test_batched_requests_match_their_solo_renders(engine: Engine, disk: str) -> None:
    requests = [
        RenderRequest(
            prompt, seed=seed, steps=3, width=64, height=64, model="tiny", options=controlled(disk)
        )
        for prompt, seed in (("a cat", 1), ("a red barn", 2))
    ]
    batched = engine.render_batch(requests)
    for request, [image] in zip(requests, batched, strict=True):
        [solo] = engine.render(request)
        a = np.asarray(Image.open(io.BytesIO(image.png)), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(solo.png)), dtype=np.int16)
        assert np.abs(a - b).max() <= 2


def test_the_family_picks_its_controlnet_and_a_mismatch_is_named(engine: Engine, disk: str) -> None:
    _, infotext = pixels_and_infotext(engine, model="tiny-xl", options=controlled(disk))
    assert "Model: tiny-xl-controlnet [" in infotext
    mismatch = "tiny-xl-controlnet does not fit this checkpoint: it reads text 80 wide"
    with pytest.raises(RenderInputError, match=re.escape(mismatch)):
        pixels(engine, options=controlled(disk, model="tiny-xl-controlnet"))


def test_a_unit_naming_no_model_is_given_only_one_its_server_allows(
    engine: Engine, disk: str
) -> None:
    # tiny-controlnet fits the tiny checkpoint, but its server allows the SDXL one only.
    options = {**controlled(disk), ALLOWED_CONTROLNETS_OPTION: ["tiny-xl-controlnet"]}
    with pytest.raises(RenderInputError, match="none of the ControlNets this server allows fits"):
        pixels(engine, options=options)


def test_infotext_records_the_unit_in_the_web_ui_form(engine: Engine, disk: str) -> None:
    _, infotext = pixels_and_infotext(
        engine, options=controlled(disk, weight=0.75, guidance_start=0.25, guidance_end=0.5)
    )
    _, _, params = parse_infotext(infotext)  # as read back from the PNG
    value = params["ControlNet 0"]
    assert isinstance(value, str)
    assert value.startswith("Module: canny, Model: tiny-controlnet [")
    fields = parse_control_infotext(value)
    assert fields["Weight"] == "0.75" and fields["Resize Mode"] == "Crop and Resize"
    assert (fields["Guidance Start"], fields["Guidance End"]) == ("0.25", "0.5")
    assert len(fields["Model"].rsplit("[", 1)[1]) == len("0123abcd]")


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ({"module": "sketch"}, "unknown control type 'sketch'; choose one of canny, tile"),
        ({"module": "canny", "weight": 3}, "control weight must be between 0 and 2, got 3"),
        (
            {"module": "canny", "guidance_start": 0.8, "guidance_end": 0.2},
            "control start (0.8) must not be after control end (0.2)",
        ),
        ({"module": "canny", "model": "nope"}, "unknown ControlNet model 'nope': it is not inst"),
        (
            {"module": "depth"},
            "the depth control's annotator is not installed on this server: ask an admin, or "
            "send a ready depth map with control type none",
        ),
        ({"module": "openpose"}, "Easel cannot run the openpose annotator: make the openpose"),
    ],
)
def test_bad_units_are_refused_before_any_model_loads(
    models: Path, disk: str, unit: dict[str, Any], message: str
) -> None:
    fresh = Engine(models)
    request = RenderRequest(
        "a cat", steps=2, width=64, height=64, options={"controlnet": [{"image": disk, **unit}]}
    )
    with pytest.raises(RenderInputError, match="^" + re.escape(message)):
        fresh.render(request)
    assert list(fresh.models.loaded) == []


def test_a_control_picture_that_is_no_image_is_named(models: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    request = RenderRequest("a cat", options=controlled(str(notes)))
    with pytest.raises(RenderInputError, match=r"^control image is not a readable image"):
        Engine(models).render(request)


def test_depth_runs_a_local_annotator(disk: str, tmp_path: Path) -> None:
    folder = write_tiny_depth_annotator(tmp_path)
    with Image.open(disk) as picture:
        depth_map = depth(picture, folder)
    assert depth_map.size == (64, 64) and depth_map.getextrema()[0] == (0, 255)
    write_tiny_controlnet(write_tiny_model(tmp_path / "tiny"))
    engine = Engine(tmp_path)
    request = RenderRequest("a cat", seed=5, steps=2, width=64, height=64)
    [plain] = engine.render(request)
    options = controlled(disk, module="depth")
    [steered] = engine.render(dataclasses.replace(request, options=options))
    assert plain.png != steered.png
    assert 'ControlNet 0: "Module: depth, Model: tiny-controlnet [' in steered.infotext


def test_canny_draws_the_edges_of_a_shape_and_nothing_else(disk: str) -> None:
    with Image.open(disk) as picture:
        edges = np.asarray(canny(picture).convert("L")) > 0
    assert edges[32, 12:15].any() and edges[32, 50:53].any()  # the left and right rims
    assert not edges[28:36, 28:36].any() and not edges[:6, :6].any()  # inside and outside
    assert not np.asarray(canny(Image.new("RGB", (32, 32), "grey"))).any()


@pytest.mark.parametrize(
    ("tensor", "family"),
    [
        ("control_model.input_hint_block.0.weight", "controlnet-sd15"),
        ("control_model.label_emb.0.0.weight", "controlnet-sdxl"),
        ("controlnet_cond_embedding.conv_in.weight", "controlnet-sd15"),
        ("add_embedding.linear_1.weight", "controlnet-sdxl"),
    ],
)
def test_a_file_without_sidecar_gets_its_family_s_shipped_config(
    tmp_path: Path, tensor: str, family: str
) -> None:
    path = tmp_path / "control.safetensors"
    save_file({tensor: torch.zeros(1)}, str(path))
    config = shipped_config(path)
    assert config.name == family and (config / "config.json").is_file()
