"""Add-ons whose numbers are broken, on the tiny model through the real engine: one whose
weights are not finite is skipped as it loads, with a warning, and a picture that still
decodes to not-a-number values (finite weights that overflow) fails its render in words that
name the add-ons, instead of being delivered black."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from inference import engine as engine_module
from inference import networks as networks_module
from inference.engine import Engine
from inference.face_options import FACE_RESTORE
from inference.infotext import parse_infotext
from inference.networks import all_finite
from inference.passes import faces as faces_pass
from inference.passes.denoise import blank_pictures
from inference.passes.jobs import ImageJob, OwnRequest
from inference.prompts import ExtraNetwork
from inference.tiny import TINY_TEXT_HIDDEN, write_tiny_lora
from inference.types import BlankPicture, PartlyRendered, RenderFailed, RenderRequest
from tests.inference.conftest import TINY, PixelReader
from tests.inference.test_batching import BATCH_TOLERANCE

BASE = RenderRequest("a cat", width=64, height=64, steps=2, seed=5)
BLANK = (
    "a picture came out blank (not-a-number or infinite values): a LoRA or embedding it uses "
    "may be broken"
)
SKIPPED = "skipped: its weights hold not-a-number or infinite values (a broken file)"
# Add-ons of finite numbers that overflow, each as a prompt uses it and as a failure names it.
OVERFLOWING = [("a cat hugeemb", "embedding hugeemb"), ("<lora:hugelora:1>", "LoRA hugelora")]


def _embedding(path: Path, vectors: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors}, str(path))


@pytest.fixture(scope="module")
def broken_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny model (linked) with a good LoRA, one whose up weights are NaN,
    one whose weights are finite but overflow, and embeddings of NaN (float32, and float8,
    whose ``isfinite`` a CPU lacks), 1e20 (finite, but the text encoder overflows on it), a
    single number, and vectors of no numbers."""
    directory = tmp_path_factory.mktemp("broken-models")
    (directory / TINY).symlink_to(models_dir / TINY, target_is_directory=True)
    good = load_file(str(write_tiny_lora(directory / "Lora" / "good.safetensors", seed=1)))
    nan = {k: v.fill_(float("nan")) if k.endswith("up.weight") else v for k, v in good.items()}
    save_file(nan, str(directory / "Lora" / "nanlora.safetensors"))
    huge = {k: torch.full_like(v, 1e30) if "weight" in k else v for k, v in good.items()}
    save_file(huge, str(directory / "Lora" / "hugelora.safetensors"))
    embeddings = directory / "embeddings"
    _embedding(embeddings / "nanemb.safetensors", torch.full((1, TINY_TEXT_HIDDEN), torch.nan))
    nan8 = torch.full((1, TINY_TEXT_HIDDEN), torch.nan).to(torch.float8_e4m3fn)
    _embedding(embeddings / "fp8nanemb.safetensors", nan8)
    _embedding(embeddings / "hugeemb.safetensors", torch.full((1, TINY_TEXT_HIDDEN), 1e20))
    _embedding(embeddings / "scalaremb.safetensors", torch.tensor(1.0))
    _embedding(embeddings / "widthlessemb.safetensors", torch.zeros(1, 0))
    _embedding(embeddings / "emptyemb.safetensors", torch.zeros(0))
    return directory


@pytest.fixture(scope="module")
def broken_engine(broken_models: Path) -> Engine:
    return Engine(broken_models, default_model=TINY)


def render(engine: Engine, prompt: str) -> tuple[bytes, dict[str, Any]]:
    [image] = engine.render(dataclasses.replace(BASE, prompt=prompt))
    return image.png, parse_infotext(image.infotext)[2]


@pytest.mark.parametrize(
    ("tag", "warning"),
    [
        ("<lora:nanlora:1>", f"LoRA 'nanlora' {SKIPPED}"),
        ("nanemb", f"embedding 'nanemb' {SKIPPED}"),
        ("fp8nanemb", f"embedding 'fp8nanemb' {SKIPPED}"),
        ("scalaremb", "embedding 'scalaremb' skipped: it holds a single number, not vectors"),
        ("widthlessemb", "embedding 'widthlessemb' skipped: its vectors hold no numbers"),
        ("emptyemb", "embedding 'emptyemb' skipped: its vectors hold no numbers"),
    ],
)
def test_an_add_on_with_broken_numbers_is_skipped_with_a_warning(
    broken_engine: Engine, pixels: PixelReader, tag: str, warning: str
) -> None:
    plain, _ = render(broken_engine, "a cat")
    png, params = render(broken_engine, f"a cat {tag}")
    assert params["Prompt warnings"] == warning
    assert "Lora hashes" not in params and "TI hashes" not in params
    assert pixels(png).mean() > 10  # not blank: a NaN picture is delivered black
    # Nothing of it is left in the model for the next job.
    assert np.array_equal(pixels(render(broken_engine, "a cat")[0]), pixels(plain))


@pytest.mark.parametrize("name", ["scalaremb", "widthlessemb", "emptyemb"])
def test_a_batch_with_an_unfit_embedding_renders_both_pictures(
    broken_engine: Engine, name: str
) -> None:
    """Never an internal failure that sends the whole batch round again job by job."""
    requests = [dataclasses.replace(BASE, prompt=p) for p in ("a cat", f"a cat {name}")]
    [[clean], [skipped]] = broken_engine.render_batch(requests)
    assert "Prompt warnings" not in parse_infotext(clean.infotext)[2]
    assert name in parse_infotext(skipped.infotext)[2]["Prompt warnings"]


@pytest.mark.parametrize(("prompt", "named"), OVERFLOWING)
def test_a_picture_that_decodes_to_not_a_number_fails_naming_the_add_ons(
    broken_engine: Engine, pixels: PixelReader, prompt: str, named: str
) -> None:
    with pytest.raises(RenderFailed) as failed:
        broken_engine.render(dataclasses.replace(BASE, prompt=prompt))
    # On the CPU the model runs in float32: no half precision to blame.
    assert str(failed.value) == f"{BLANK} ({named}); try without them"
    plain, _ = render(broken_engine, "a cat")
    good, _ = render(broken_engine, "a cat <lora:good:1>")
    assert pixels(plain).mean() > 10 and not np.array_equal(pixels(good), pixels(plain))


@pytest.mark.parametrize(("prompt", "named"), OVERFLOWING)
def test_a_blank_picture_in_a_batch_fails_its_request_alone_the_others_kept(
    broken_engine: Engine, pixels: PixelReader, prompt: str, named: str
) -> None:
    """The others' pictures come from the one call, as their solo renders (the LoRA's picture
    runs in a call of its own: its row is found among the batch's all the same)."""
    requests = [
        dataclasses.replace(BASE, prompt=text, seed=seed)
        for text, seed in (("a cat", 5), (prompt, 6), ("a dog", 7))
    ]
    with pytest.raises(PartlyRendered) as partly:
        broken_engine.render_batch(requests)
    failures = {index: str(error) for index, error in partly.value.failures.items()}
    assert failures == {1: f"{BLANK} ({named}); try without them"}
    assert sorted(partly.value.rendered) == [0, 2]
    for index in (0, 2):
        [batched] = partly.value.rendered[index]
        [solo] = broken_engine.render(requests[index])
        assert batched.infotext == solo.infotext
        assert np.abs(pixels(batched.png) - pixels(solo.png)).max() <= BATCH_TOLERANCE


def test_an_all_blank_batch_runs_no_later_pass(
    broken_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every picture of the first pass blank: no hires enlarge or pass, no faces; each job
    fails as its own."""
    enlarged: list[object] = []
    monkeypatch.setattr(broken_engine.models, "enlarge", lambda *args: enlarged.append(args))
    hires = {"hires_scale": 2.0, "hires_steps": 2, "hires_upscaler": "Lanczos"}
    requests = [
        dataclasses.replace(BASE, prompt="a cat hugeemb", seed=seed, options=hires)
        for seed in (5, 6)
    ]
    with pytest.raises(PartlyRendered) as partly:
        broken_engine.render_batch(requests)
    assert sorted(partly.value.failures) == [0, 1] and partly.value.rendered == {}
    assert enlarged == []


def test_a_picture_whose_faces_come_out_blank_in_a_batch_fails_its_request_alone(
    broken_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The faces pass works picture by picture: a face restorer's blank output (its
    ``BlankPicture``) fails that picture's request with its own words; the others' pictures
    are delivered."""
    said = BlankPicture("face restorer 'r' (r.safetensors) gave not-a-number values")
    restored: list[int] = []

    def blank_second(restorer: object, image: Any, faces: object) -> Any:
        restored.append(1)
        if len(restored) == 2:
            raise said
        return image

    monkeypatch.setattr(faces_pass, "restore_faces", blank_second)
    monkeypatch.setattr(faces_pass, "resolve_face_restorer", lambda *args: ("r", Path("r")))
    monkeypatch.setattr(broken_engine.models, "face_restorer", lambda *args: FakeRestorer())
    requests = [
        dataclasses.replace(BASE, seed=seed, options={FACE_RESTORE: True}) for seed in (5, 6, 7)
    ]
    with pytest.raises(PartlyRendered) as partly:
        broken_engine.render_batch(requests)
    assert partly.value.failures == {1: said}
    assert sorted(partly.value.rendered) == [0, 2]
    assert len(restored) == 3


@dataclasses.dataclass
class FakeRestorer:
    architecture: str = "RestoreFormer"


def test_a_blank_picture_among_one_by_one_renders_fails_its_request_alone(
    broken_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A batch of modes rendered request by request (upscales, faces): a blank picture of
    one (a creative upscale's tile, an upscaler's output) fails that request alone, the
    others rendered once."""
    said = BlankPicture("upscaler 'x' (x.pth) gave not-a-number or infinite values")
    upscale = engine_module.upscale

    def blank_second(request: RenderRequest, *args: Any, **kwargs: Any) -> Any:
        if request.seed == 6:
            raise said
        return upscale(request, *args, **kwargs)

    monkeypatch.setattr(engine_module, "upscale", blank_second)
    picture = tmp_path / "picture.png"
    Image.new("RGB", (16, 16), "white").save(picture)
    requests = [
        dataclasses.replace(
            BASE, seed=seed, mode="upscale", init_image=str(picture), options={"upscale_factor": 2}
        )
        for seed in (5, 6, 7)
    ]
    with pytest.raises(PartlyRendered) as partly:
        broken_engine.render_batch(requests)
    assert partly.value.failures == {1: said}
    assert [image.width for index in (0, 2) for image in partly.value.rendered[index]] == [32, 32]


def test_half_precision_is_blamed_only_where_the_model_runs_in_it() -> None:
    job = ImageJob(
        "a cat",
        "",
        1,
        None,
        0.0,
        loras=(ExtraNetwork("lora", "ink", 1, 1),),
        own_request=OwnRequest(),
    )
    said = {dtype: str(blank_pictures([job], dtype)) for dtype in (torch.float16, torch.float32)}
    assert said[torch.float16] == (
        f"{BLANK} (LoRA ink), or the model may have overflowed in half precision; try without them"
    )
    assert said[torch.float32] == f"{BLANK} (LoRA ink); try without them"
    plain = ImageJob("a cat", "", 1, None, 0.0, own_request=OwnRequest())
    assert str(blank_pictures([plain], torch.float32)).endswith(
        ": the model or its VAE may be broken; ask an admin to check them"
    )


@pytest.mark.parametrize(
    ("values", "dtype", "finite"),
    [
        ([1.0, float("nan"), 2.0], torch.float16, False),
        ([1.0, float("inf"), 2.0], torch.float16, False),
        ([1.0, float("-inf"), 2.0], torch.bfloat16, False),
        ([float("inf"), float("-inf")], torch.float32, False),  # their sum is NaN, not 0
        ([float("nan")], torch.float64, False),  # checked number by number
        ([1.0, -2.5, 3.0], torch.float32, True),
    ],
    ids=["nan", "+inf", "-inf", "both-infs", "float64-nan", "plain"],
)
def test_all_finite_finds_every_non_finite_number(
    values: list[float], dtype: torch.dtype, finite: bool
) -> None:
    tensors = [torch.ones(4, 8, dtype=dtype), torch.tensor(values, dtype=dtype)]
    assert all_finite(tensors) is finite


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_all_finite_takes_the_largest_finite_numbers_of_each_type(dtype: torch.dtype) -> None:
    """A million of each type's largest number (float16: 65504 everywhere) overflow no
    float64 sum, nor do a tensor of them and one of their negatives."""
    largest = torch.finfo(dtype).max
    tensors = [
        torch.full((1000, 1000), largest, dtype=dtype),
        torch.full((3,), -largest, dtype=dtype),
    ]
    assert all_finite(tensors)


def test_no_tensors_are_all_finite() -> None:
    assert all_finite([])


def test_a_float64_tensor_of_huge_finite_numbers_is_finite() -> None:
    """Summing these in float64 would overflow: they are checked number by number."""
    assert all_finite([torch.full((4,), torch.finfo(torch.float64).max, dtype=torch.float64)])


# Every float8 type this torch has: a CPU's ``isfinite`` raises on some and calls a NaN of
# float8_e8m0fnu finite.
FLOAT8_TYPES = [
    getattr(torch, name)
    for name in (
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    )
    if hasattr(torch, name)
]


@pytest.mark.parametrize("dtype", FLOAT8_TYPES, ids=str)
def test_all_finite_finds_a_nan_of_each_float8_type_and_takes_its_largest_number(
    dtype: torch.dtype,
) -> None:
    ones = torch.ones(4, 8).to(dtype)
    nan = torch.tensor([1.0, float("nan")]).to(dtype)
    assert torch.isnan(nan.float()).any()  # every float8 type holds a NaN
    assert not all_finite([ones, nan])
    largest = torch.full((1000, 1000), torch.finfo(dtype).max).to(dtype)
    assert all_finite([ones, largest])


def test_all_finite_finds_an_infinity_of_a_float8_type_that_holds_one() -> None:
    assert not all_finite([torch.tensor([1.0, float("-inf")]).to(torch.float8_e5m2)])


def test_all_finite_sums_a_tensor_bigger_than_one_part_whole() -> None:
    """A NaN in the last of a big tensor's parts, a non-contiguous view's last number, and
    +inf and -inf in different parts (their NaN, not a 0) are all found."""
    size = 2 * networks_module._SUMMED_AT_ONCE + 3
    last = torch.ones(size, dtype=torch.float16)
    last[-1] = float("nan")
    assert not all_finite([last])
    strided = torch.ones(2, size, dtype=torch.float32).t()  # not contiguous
    strided[-1, -1] = float("inf")
    assert not all_finite([strided])
    apart = torch.ones(size, dtype=torch.bfloat16)
    apart[0], apart[-1] = float("inf"), float("-inf")
    assert not all_finite([apart])
    assert all_finite([torch.ones(size, dtype=torch.float16), torch.ones(2, size).t()])
