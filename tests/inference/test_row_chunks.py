"""UNet calls of more than ``MAX_UNET_ROWS`` rows (four pictures of 16 ``AND`` parts evaluate
68 rows a step) are split: the real UNet and the ControlNet never take more rows than the cap,
and the pictures, and every step's prediction, equal the unsplit call's, on SD1.5 and SDXL,
with a ControlNet, with fast mode's cache and with text of different lengths (a mask). Only
one test renders the 68 rows; the others split a smaller job under a lower cap (the same code,
a tenth of the UNet work)."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inference.compile import UNET_ROWS
from inference.controlnet import load_controlnet
from inference.engine import Engine
from inference.fast import DeepCache
from inference.guidance import MAX_UNET_ROWS, UNET_CHUNK, ScheduledUNet, _chunks, _sliced
from inference.limits import MAX_BATCH_IMAGES
from inference.prompts.composition import MAX_SUBPROMPTS
from inference.tiny import (
    build_tiny_pipeline,
    write_tiny_controlnet,
    write_tiny_ip_adapter,
    write_tiny_model,
)
from inference.types import RenderRequest

STEPS = 2


@dataclass(frozen=True)
class Job:
    count: int
    parts: int
    long_last_part: bool = False  # two 75-token chunks (``BREAK``), the other parts one

    @property
    def prompt(self) -> str:
        prompt = " AND ".join(f"part {index}" for index in range(self.parts))
        return f"{prompt} BREAK more" if self.long_last_part else prompt

    @property
    def rows(self) -> int:
        """Each picture's negative and first part, and one row per further part."""
        return self.count * (2 + self.parts - 1)


LARGEST = Job(count=4, parts=MAX_SUBPROMPTS)  # 68 rows
SMALL = Job(count=2, parts=2)  # 6 rows: two chunks of one shape under a cap of 3
SMALL_MASKED = Job(count=2, parts=2, long_last_part=True)
SMALL_CAP = 3


@dataclass
class Spies:
    """What the last render did: the rows of each call, the text tokens each masked call's
    rows attend to, and the guidance's outputs."""

    rows: dict[str, list[int]] = field(default_factory=lambda: {"unet": [], "controlnet": []})
    attended: list[list[int]] = field(default_factory=list)
    predictions: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        for calls in self.rows.values():
            calls.clear()
        self.attended.clear()
        self.predictions.clear()

    def counting(self, name: str) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.rows[name].append((args[0] if args else kwargs["sample"]).shape[0])
            if (mask := kwargs.get("encoder_attention_mask")) is not None:
                self.attended.append([int(tokens) for tokens in mask.sum(-1)])

        return hook


@dataclass(frozen=True)
class Tools:
    engine: Engine
    spies: Spies
    control_picture: str


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tools]:
    """An engine of ``tiny`` (SD1.5) and ``tiny-xl`` (SDXL), each with its ControlNet and
    IP-Adapter, whose UNets, ControlNets and guidance outputs are spied on."""
    directory = tmp_path_factory.mktemp("models")
    for model in (
        write_tiny_model(directory / "tiny"),
        write_tiny_model(directory / "tiny-xl", family="sdxl"),
    ):
        write_tiny_controlnet(model)
        write_tiny_ip_adapter(model)
    picture_path = directory / "disk.png"
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).ellipse((12, 12, 52, 52), fill="white")
    picture.save(picture_path)
    spies = Spies()

    def spied_load(path: Path, dtype: torch.dtype) -> Any:
        controlnet = load_controlnet(path, dtype)
        controlnet.register_forward_pre_hook(spies.counting("controlnet"), with_kwargs=True)
        return controlnet

    guidance_forward = ScheduledUNet.forward

    def spied_forward(self: ScheduledUNet, *args: Any, **kwargs: Any) -> Any:
        output = guidance_forward(self, *args, **kwargs)
        spies.predictions.append(output[0].clone())  # the pipelines ask for a tuple
        return output

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inference.controlnet.load_controlnet", spied_load)
        patch.setattr(ScheduledUNet, "forward", spied_forward)
        yield Tools(Engine(directory), spies, str(picture_path))


@dataclass(frozen=True)
class Render:
    pngs: list[bytes]
    predictions: list[torch.Tensor]
    rows: dict[str, list[int]]
    attended: list[list[int]]


def render(tools: Tools, job: Job, cap: int, model: str, **changes: Any) -> Render:
    engine, spies = tools.engine, tools.spies
    spies.clear()
    # The model cache keeps one model: the UNet is spied on while it renders.
    unet = engine.models.load(engine.registry.resolve(model)).pipeline.unet
    hook = unet.register_forward_pre_hook(spies.counting("unet"), with_kwargs=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inference.guidance.MAX_UNET_ROWS", cap)
        request = RenderRequest(
            job.prompt, seed=3, steps=STEPS, width=64, height=64, count=job.count, model=model
        )
        request = dataclasses.replace(request, **changes)
        try:
            images = engine.render(request)
        finally:
            hook.remove()
    return Render(
        [image.png for image in images],
        list(spies.predictions),
        {name: list(calls) for name, calls in spies.rows.items()},
        list(spies.attended),
    )


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as picture:
        return np.asarray(picture, dtype=np.int16)


def controlled(tools: Tools) -> dict[str, Any]:
    return {"controlnet": [{"module": "canny", "image": tools.control_picture}]}


def image_prompted(tools: Tools) -> dict[str, Any]:
    return {"ipadapter": {"images": [tools.control_picture]}}


# How far a split call's prediction may stray from the unsplit call's. The rows are computed
# alike, but the CPU's matrix kernels may sum in another order for another row count: 6 rows
# against 3 differed by 1.4e-6 (68 against 22-23: not at all). A chunk reading other rows'
# text or cached features is off by about 1.
PREDICTION_TOLERANCE = 1e-4


def assert_same_render(split: Render, whole: Render) -> None:
    assert len(split.predictions) == len(whole.predictions) == STEPS
    for step, (part, full) in enumerate(zip(split.predictions, whole.predictions, strict=True)):
        difference = float((part - full).abs().max())
        assert difference <= PREDICTION_TOLERANCE, f"step {step}: {difference}"
    for part, full in zip(split.pngs, whole.pngs, strict=True):
        # Rounded to 8 bits, such a difference moves a pixel by at most 1 (it did, 6 against 3).
        assert np.abs(pixels(part) - pixels(full)).max() <= 1


# Grouped by model: the engine keeps one loaded.
@pytest.mark.parametrize(
    ("model", "fast", "control", "image_prompt"),
    [
        ("tiny", False, False, False),
        ("tiny", True, False, False),
        ("tiny", False, True, False),
        ("tiny", False, False, True),
        ("tiny-xl", False, False, False),
        ("tiny-xl", True, False, False),
    ],
    ids=["sd15", "sd15-fast", "sd15-controlnet", "sd15-image-prompt", "sdxl", "sdxl-fast"],
)
def test_split_calls_render_as_one_call(
    tools: Tools, model: str, fast: bool, control: bool, image_prompt: bool
) -> None:
    """With fast mode, DeepCache's second call reuses the first's deep features: those of its
    own chunk (the two chunks have one shape, not the same rows)."""
    options = (controlled(tools) if control else {}) | (
        image_prompted(tools) if image_prompt else {}
    )
    whole = render(tools, SMALL, SMALL.rows, model, fast=fast, options=options)
    split = render(tools, SMALL, SMALL_CAP, model, fast=fast, options=options)
    assert whole.rows["unet"] == [SMALL.rows] * STEPS
    assert split.rows == {"unet": [3, 3] * STEPS, "controlnet": [3, 3] * STEPS if control else []}
    assert_same_render(split, whole)


def test_split_calls_give_each_chunk_its_rows_text_mask(tools: Tools) -> None:
    """The last part's rows are two chunks long (``BREAK``), the others' padding is masked
    out: the chunks' rows differ in length, and each chunk gets its own rows' mask."""
    whole = render(tools, SMALL_MASKED, SMALL_MASKED.rows, "tiny-xl")
    split = render(tools, SMALL_MASKED, SMALL_CAP, "tiny-xl")
    assert whole.attended == [[77, 77, 77, 77, 154, 154]] * STEPS
    assert split.attended == [[77, 77, 77], [77, 154, 154]] * STEPS
    assert_same_render(split, whole)


def test_sixty_eight_rows_go_in_three_calls_and_render_as_one(tools: Tools) -> None:
    """The largest job, on SDXL (pooled text, time ids) with a ControlNet (its residuals) and
    an image prompt (its tokens)."""
    options = controlled(tools) | image_prompted(tools)
    whole = render(tools, LARGEST, LARGEST.rows, "tiny-xl", options=options)
    split = render(tools, LARGEST, MAX_UNET_ROWS, "tiny-xl", options=options)
    assert LARGEST.rows == whole.rows["unet"][0] == 68
    chunks = [22, 23, 23]  # near even, each at most MAX_UNET_ROWS
    assert split.rows == {"unet": chunks * STEPS, "controlnet": chunks * STEPS}
    assert_same_render(split, whole)


def test_fast_mode_keeps_a_cache_per_chunk_of_rows() -> None:
    """66 rows go in chunks of 22 from rows 0, 22 and 44; 44 rows from rows 0 and 22. A chunk of
    one shape elsewhere in the call, or in the same place in a call of other rows, holds other
    rows: the first call of each (first row, rows) is full."""
    unet = build_tiny_pipeline().unet
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.inference_mode(), DeepCache(unet, interval=10).installed() as cache:
        for chunk in [(44, 66), (44, 66), (22, 44), (44, 66), (22, 66)]:
            token = UNET_CHUNK.set(chunk)
            try:
                unet(sample, 10, text)
            finally:
                UNET_CHUNK.reset(token)
    assert (cache.calls, cache.full_calls) == (5, 3)


def test_chunks_are_near_even_within_the_cap_and_beyond_compiled_shapes() -> None:
    # The engine's largest plain batch (16 pictures with CFG) is one call.
    assert _chunks(2 * MAX_BATCH_IMAGES) == [slice(0, 2 * MAX_BATCH_IMAGES)]
    for rows in range(1, 20 * MAX_UNET_ROWS):
        chunks = _chunks(rows)
        sizes = [chunk.stop - chunk.start for chunk in chunks]
        assert len(chunks) == math.ceil(rows / MAX_UNET_ROWS)
        assert [chunk.start for chunk in chunks] == [0, *(chunk.stop for chunk in chunks[:-1])]
        assert chunks[-1].stop == rows
        assert max(sizes) - min(sizes) <= 1
        assert max(sizes) <= MAX_UNET_ROWS
        if len(chunks) > 1:
            # Split calls run eager: no compiled or graphed shape holds so many rows.
            assert 2 * min(sizes) >= MAX_UNET_ROWS
            assert min(sizes) > max(UNET_ROWS)


def test_only_per_row_tensors_are_sliced() -> None:
    rows, chunk = 5, slice(1, 3)
    per_row = torch.arange(rows * 2).reshape(rows, 2)
    other = torch.zeros(3, 2)
    timestep = torch.tensor(7)
    sliced = _sliced(
        (per_row, timestep, [per_row, other], {"time_ids": per_row, "scale": 0.5}), chunk, rows
    )
    assert torch.equal(sliced[0], per_row[1:3])
    assert sliced[1] is timestep
    assert isinstance(sliced[2], list)
    assert torch.equal(sliced[2][0], per_row[1:3]) and sliced[2][1] is other
    assert torch.equal(sliced[3]["time_ids"], per_row[1:3]) and sliced[3]["scale"] == 0.5
