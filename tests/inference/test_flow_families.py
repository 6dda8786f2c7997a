"""SD3 and Flux (dev, schnell) through the real engine with tiny random models: txt2img with
each family's guidance and infotext, batches that give each member their solo picture,
variation seeds, img2img, inpaint, hires fix, a LoRA applied and removed, progress with
previews and cancel, and each SD feature these families cannot take refused in one sentence."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from inference.compile import Compiler
from inference.engine import Engine
from inference.flow_tiny import write_tiny_flow_checkpoint, write_tiny_flow_lora
from inference.infotext import parse_infotext
from inference.tiny import write_tiny_embedding, write_tiny_model
from inference.types import RenderCancelled, RenderInputError, RenderRequest, StepProgress
from tests.inference.test_batching import BATCH_TOLERANCE
from tests.inference.test_embedding_listing import settle

SIZE = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sd3``, ``flux`` (dev), ``schnell``, ``sd3`` again as ``sd3-file`` (one all-in-one file
    in SD3's own layout) and as ``sd3-split`` (its transformer alone in ``unet/``, text
    encoders in ``text_encoder/``, VAE in ``vae/``), a LoRA for each transformer, an SD
    embedding."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / "sd3", family="sd3")
    write_tiny_flow_checkpoint(directory / "Stable-diffusion" / "sd3-file.safetensors")
    write_tiny_flow_checkpoint(directory / "unet" / "sd3-split.safetensors", parts_dir=directory)
    write_tiny_model(directory / "flux", family="flux")
    write_tiny_model(directory / "schnell", family="flux-schnell")
    write_tiny_flow_lora(directory / "lora" / "flux-lora.safetensors", "flux")
    write_tiny_flow_lora(directory / "lora" / "sd3-lora.safetensors", "sd3")
    write_tiny_embedding(directory / "embeddings" / "emb.safetensors")
    return directory


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(models, preview_interval_s=0, max_loaded_models=3)


def request(model: str, **changes: Any) -> RenderRequest:
    fields: dict[str, Any] = {"prompt": "a red cat", "seed": 7, "steps": 4, "sampler": "Euler"}
    return RenderRequest(model=model, **{**fields, **SIZE, **changes})


def pixels(image: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(np.int16)


def render(engine: Engine, model: str, **changes: Any) -> tuple[np.ndarray, dict[str, Any]]:
    (image,) = engine.render(request(model, **changes))
    return pixels(image), parse_infotext(image.infotext)[2]


@pytest.mark.parametrize(("model", "guidance"), [("sd3", None), ("flux", 3.5), ("schnell", None)])
def test_each_family_renders_with_its_guidance_and_reads_weights_as_plain_text(
    engine: Engine, model: str, guidance: float | None
) -> None:
    picture, fields = render(engine, model, prompt="a (red:1.4) cat", cfg_scale=3.5)
    plain, _ = render(engine, model, prompt="a red cat", cfg_scale=3.5)
    assert picture.shape == (64, 64, 3)
    assert np.array_equal(picture, plain)  # T5 and CLIP read the same words
    assert "takes no weights" in fields["Prompt warnings"]
    assert fields["Sampler"] == "Euler" and fields["Model"] == model
    assert fields.get("Distilled CFG Scale") == guidance
    # Only SD3 runs true CFG; Flux's text says 1, as Forge's does.
    assert fields["CFG scale"] == (3.5 if model == "sd3" else 1)
    other_cfg, _ = render(engine, model, prompt="a red cat", cfg_scale=6)
    # SD3's CFG and Flux dev's distilled guidance change the picture; schnell has none.
    assert np.array_equal(other_cfg, plain) == (model == "schnell")


@pytest.mark.parametrize("single_file", ["sd3-file", "sd3-split"])
def test_a_single_file_renders_as_its_diffusers_folder(engine: Engine, single_file: str) -> None:
    from_file, fields = render(engine, single_file, negative_prompt="blurry")
    from_folder, _ = render(engine, "sd3", negative_prompt="blurry")
    # The same weights, laid out as each loader leaves them: CPU kernels (oneDNN's AVX-512 ones)
    # may round them apart, as a batch's rows (``BATCH_TOLERANCE``).
    assert np.abs(from_file - from_folder).max() <= BATCH_TOLERANCE
    assert fields["Model"] == single_file


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_a_batch_gives_each_member_their_solo_picture(engine: Engine, model: str) -> None:
    first = request(model, prompt="a red cat", seed=11)
    second = request(model, prompt="a blue dog", seed=40, count=2)
    batched = engine.render_batch([first, second])
    alone = [engine.render(first)[0], *engine.render(second)]
    for together, solo in zip([*batched[0], *batched[1]], alone, strict=True):
        assert np.abs(pixels(together) - pixels(solo)).max() <= 2  # float rounding only
    assert not np.array_equal(pixels(alone[1]), pixels(alone[2]))  # seed + 1 differs


def test_variation_seeds_blend_from_the_seed_s_picture(engine: Engine) -> None:
    plain, _ = render(engine, "flux")
    none, _ = render(engine, "flux", variation_seed=99, variation_strength=0.0)
    half, fields = render(engine, "flux", variation_seed=99, variation_strength=0.5)
    again, _ = render(engine, "flux", variation_seed=99, variation_strength=0.5)
    assert np.array_equal(plain, none)
    assert not np.array_equal(plain, half) and np.array_equal(half, again)
    assert fields["Variation seed"] == 99


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_img2img_and_inpaint_start_from_the_picture(
    engine: Engine, model: str, tmp_path: Path
) -> None:
    start, _ = render(engine, model)
    init = tmp_path / "init.png"
    # Another seed than the start picture's: its own noise would lead back to it.
    again = {"seed": 21, "init_image": str(init)}
    Image.fromarray(start.astype(np.uint8)).save(init)
    mask = tmp_path / "mask.png"
    mask_picture = Image.new("L", (64, 64), 0)
    mask_picture.paste(255, (0, 0, 32, 64))
    mask_picture.save(mask)
    light, _ = render(engine, model, mode="img2img", denoising_strength=0.3, **again)
    strong, _ = render(engine, model, mode="img2img", denoising_strength=0.9, **again)
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    from_grey, _ = render(
        engine, model, mode="img2img", denoising_strength=0.3, **{**again, "init_image": str(grey)}
    )
    # The random VAE is no autoencoder, so no closeness to the start: the picture and the
    # strength both matter.
    assert not np.array_equal(light, strong)
    assert np.abs(light - from_grey).mean() > 5
    painted, fields = render(
        engine,
        model,
        mode="inpaint",
        mask_image=str(mask),
        **again,
        denoising_strength=1.0,
        options={"mask_blur": 0},
    )
    assert np.abs(painted - start)[:, 40:].max() <= 1  # kept outside the mask
    assert np.abs(painted - start)[:, :24].mean() > 5  # repainted inside it
    assert fields["Denoising strength"] == 1.0


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_img2img_below_one_step_s_worth_runs_one_and_at_0_is_refused(
    engine: Engine, model: str, tmp_path: Path
) -> None:
    """4 steps at 0.1: diffusers' flow img2img runs one step (as SD's runs the web UI's
    int(0.1 x 4) + 1), where validation refused it; at 0 it would run none, refused at render
    time (the job is refunded) in one sentence."""
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (128, 90, 40)).save(init)
    light = {"mode": "img2img", "init_image": str(init), "denoising_strength": 0.1}
    reports: list[StepProgress] = []
    engine.render(request(model, **light), progress=reports.append)
    assert [report.step for report in reports] == [1]
    label = "SD 3" if model == "sd3" else "Flux dev"
    with pytest.raises(RenderInputError) as refused:
        engine.render(request(model, **{**light, "denoising_strength": 0.0}))
    assert str(refused.value).startswith(f"{label} img2img runs no step at denoising strength 0")


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_a_lora_changes_the_picture_and_comes_off_after(engine: Engine, model: str) -> None:
    before, _ = render(engine, model)
    with_lora, fields = render(engine, model, prompt=f"a red cat <lora:{model}-lora:1>")
    after, _ = render(engine, model)
    assert not np.array_equal(before, with_lora)
    assert np.array_equal(before, after)
    assert str(fields["Lora hashes"]).startswith(f"{model}-lora: ")


def test_a_lora_removed_since_its_folder_was_listed_is_skipped_with_a_warning(
    engine: Engine, models: Path
) -> None:
    """Not handed to diffusers, which takes a missing path for a Hub repository and says so
    naming the server's folders."""
    folder = models / "lora"
    shutil.copy(folder / "flux-lora.safetensors", folder / "gone.safetensors")
    settle(folder)
    assert "gone" in engine.registry.network_files("lora")
    listed = folder.stat()
    (folder / "gone.safetensors").unlink()
    # As an NFS client's attribute cache answers the directory's stat.
    os.utime(folder, ns=(listed.st_atime_ns, listed.st_mtime_ns))
    plain, _ = render(engine, "flux")
    picture, fields = render(engine, "flux", prompt="a red cat <lora:gone:1>")
    assert np.array_equal(picture, plain)
    assert "LoRA 'gone' skipped: it is no longer installed" in fields["Prompt warnings"]
    assert fields.get("Lora hashes") is None


def test_a_lora_that_does_not_fit_is_refused_and_leaves_nothing_loaded(
    engine: Engine, models: Path
) -> None:
    """diffusers loads a LoRA's transformer part before its text encoder's: when the latter
    does not fit, what loaded must come off the shared model with the refusal, or every
    later job renders with it and every later LoRA is refused."""
    plain, _ = render(engine, "flux")
    pipeline = engine.models.loaded["flux"].pipeline
    name, projection = next(
        (name, module)
        for name, module in pipeline.text_encoder.named_modules()
        if name.endswith("q_proj")
    )
    folder = models / "lora"
    weights = load_file(folder / "flux-lora.safetensors")
    # A text-encoder pair 3 columns wider than the model's projection.
    weights[f"text_encoder.{name}.lora_A.weight"] = torch.zeros(4, projection.in_features + 3)
    weights[f"text_encoder.{name}.lora_B.weight"] = torch.zeros(projection.out_features, 4)
    save_file(weights, folder / "misfit.safetensors")
    settle(folder)
    with pytest.raises(RenderInputError, match=r"^LoRA misfit does not fit this model$"):
        render(engine, "flux", prompt="a red cat <lora:misfit:1>")
    assert not any(pipeline.get_list_adapters().values())
    after, _ = render(engine, "flux")
    assert np.array_equal(after, plain)
    with_lora, fields = render(engine, "flux", prompt="a red cat <lora:flux-lora:1>")
    assert str(fields["Lora hashes"]).startswith("flux-lora: ")
    assert not np.array_equal(with_lora, plain)


def test_progress_previews_and_cancel(engine: Engine) -> None:
    reports: list[StepProgress] = []
    engine.render(request("flux"), progress=reports.append)
    assert [report.step for report in reports] == [1, 2, 3, 4]
    assert all(report.preview and report.preview[:2] == b"\xff\xd8" for report in reports)
    cancel = threading.Event()

    def stop_at_two(report: StepProgress) -> None:
        if report.step == 2:
            cancel.set()

    with pytest.raises(RenderCancelled):
        engine.render(request("flux"), progress=stop_at_two, cancel=cancel)


def test_hires_fix_is_an_img2img_pass_at_the_larger_size(engine: Engine) -> None:
    (image,) = engine.render(
        request("sd3", options={"hires_scale": 2.0, "hires_upscaler": "Lanczos"})
    )
    fields = parse_infotext(image.infotext)[2]
    assert (image.width, image.height) == (128, 128)
    assert fields["Hires upscale"] == 2.0 and fields["Hires upscaler"] == "Lanczos"


def test_a_hires_pass_below_one_step_s_worth_runs_one(engine: Engine) -> None:
    """1 hires step at 0.3: diffusers' flow img2img runs one (its count rounds up), as the SD
    families' web UI rule does; it was refused as diffusers' SD count would run none."""
    reports: list[StepProgress] = []
    hires = {"hires_scale": 1.5, "hires_steps": 1, "hires_denoising": 0.3}
    (image,) = engine.render(request("sd3", options=hires), progress=reports.append)
    assert (image.width, image.height) == (96, 96)
    assert [report.step for report in reports] == [1, 2, 3, 4, 5]
    assert reports[-1].total_steps == 5


def test_an_engine_that_compiles_unets_runs_flow_models_eager(models: Path, tmp_path: Path) -> None:
    engine = Engine(models, compiler=Compiler(tmp_path, batch_variants=False))
    (image,) = engine.render(request("flux"))
    assert (image.width, image.height) == (64, 64)


def test_the_default_euler_a_renders_as_euler_and_says_so(engine: Engine) -> None:
    default, fields = render(engine, "flux", sampler="Euler a")
    euler, _ = render(engine, "flux", sampler="Euler")
    assert np.array_equal(default, euler)
    assert fields["Sampler"] == "Euler"
    assert "rendered with Euler" in fields["Prompt warnings"]
    other, _ = render(engine, "flux", sampler="DPM++ 2M")
    assert not np.array_equal(other, euler)


@pytest.mark.parametrize(
    ("model", "changes", "expected"),
    [
        ("flux", {"options": {"refiner": "x"}}, "the SDXL refiner does not work with Flux dev"),
        ("sd3", {"fast": True}, "fast mode (a UNet feature cache) does not work with SD 3"),
        ("flux", {"options": {"clip_skip": 2}}, "clip skip does not work with Flux dev"),
        ("schnell", {"options": {"tile": True}}, "seamless tiling (--tile) does not work"),
        ("flux", {"prompt": "a cat AND a dog"}, "AND (composable prompts) does not work"),
        ("sd3", {"prompt": "a [cat:dog:2]"}, "prompt editing and alternation"),
        (
            "flux",
            {"options": {"hires_scale": 2.0, "hires_upscaler": "Latent"}},
            "choose Lanczos or a model upscaler",
        ),
        (
            "schnell",
            {"sampler": "DPM++ 2M"},
            "the DPM++ 2M sampler does not work with Flux schnell models; choose one of: "
            "Euler, UniPC",
        ),
        ("flux", {"sampler": "DDIM"}, "choose one of: Euler, DPM++ 2M, UniPC"),
        ("sd3", {"width": 72, "height": 64}, "multiples of 16 pixels, got 72x64"),
        ("sd3", {"schedule_type": "Karras"}, "take no Karras schedule"),
    ],
)
def test_what_a_family_cannot_do_is_one_sentence(
    engine: Engine, model: str, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(RenderInputError) as refused:
        engine.render(request(model, **changes))
    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message and message.count(". ") == 0


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_an_installed_embedding_s_name_is_plain_words_in_a_flow_prompt(
    engine: Engine, model: str
) -> None:
    """These families take no textual inversion: ``emb`` (installed for SD) is a word."""
    _, fields = render(engine, model, prompt="a cat emb")
    assert "TI hashes" not in fields


def test_upscale_with_a_flow_model_keeps_the_fast_mode_only(engine: Engine, tmp_path: Path) -> None:
    picture = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (90, 120, 30)).save(picture)
    upscale = {"mode": "upscale", "init_image": str(picture), "width": None, "height": None}
    (fast,) = engine.render(request("flux", **upscale, options={"upscale_mode": "fast"}))
    assert (fast.width, fast.height) == (128, 128)
    with pytest.raises(RenderInputError, match=r"^the creative upscale \(img2img in tiles\) does"):
        engine.render(request("flux", **upscale, options={"upscale_mode": "creative"}))


@pytest.mark.parametrize(("library", "class_name"), [("os", "PathLike"), ("models.x", "Pwn")])
def test_a_sidecar_naming_another_library_is_refused_without_importing_it(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library: str, class_name: str
) -> None:
    """A split release's sidecar config is a downloaded file: the module it names for a
    component is never imported (``python -m bot`` puts the folder holding ``models/`` on the
    import path, so ``models.x`` would be the models folder's own ``x.py``)."""
    copied = tmp_path / "models"
    for part in ("unet", "text_encoder", "vae"):
        shutil.copytree(models / part, copied / part)
    sidecar = copied / "unet" / "sd3-split.config" / "model_index.json"
    index = json.loads(sidecar.read_text())
    index["scheduler"] = [library, class_name]
    sidecar.write_text(json.dumps(index))
    ran = tmp_path / "ran"
    (copied / "x.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n"
        "from diffusers import FlowMatchEulerDiscreteScheduler as Pwn\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    try:
        with pytest.raises(RenderInputError) as refused:
            Engine(copied).render(request("sd3-split"))
    finally:
        for imported in ("models.x", "models"):
            sys.modules.pop(imported, None)
    assert str(refused.value) == (
        f"sd3-split.config/model_index.json names {library}.{class_name} for its scheduler: "
        "a component's class must come from diffusers or transformers; ask an admin to fix "
        "the config folder"
    )
    assert not ran.exists()
