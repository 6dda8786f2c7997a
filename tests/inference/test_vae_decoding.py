"""A batch's VAE decode runs one picture at a time, for SD and the flow families (SD3, Flux),
so its peak is one picture's; the pictures stay within 1/255 of a batched decode, and the
doctor's peak estimate counts one picture's decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import Decoder

from inference.engine import Engine
from inference.gguf_header import TensorInfo
from inference.memory import VAE_DECODE_COPIES, peak_bytes
from inference.tiny import write_tiny_model
from inference.types import RenderRequest
from tests.inference.conftest import PixelReader


@pytest.fixture
def decoded_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every VAE decoder call."""
    rows: list[int] = []
    forward = Decoder.forward

    def counted(self: Decoder, sample: torch.Tensor, *args: object, **kwargs: object) -> object:
        rows.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(Decoder, "forward", counted)
    return rows


def cat(**changes: object) -> RenderRequest:
    fields: dict[str, object] = {"seed": 3, "steps": 2, "width": 64, "height": 64, "count": 3}
    return RenderRequest("a cat", **(fields | changes))  # type: ignore[arg-type]


def test_a_batch_decodes_one_picture_at_a_time(engine: Engine, decoded_rows: list[int]) -> None:
    engine.render(cat())
    assert decoded_rows == [1, 1, 1]
    decoded_rows.clear()
    # Hires fix: the first pass's pictures and the second pass's, each one at a time.
    engine.render(cat(count=2, options={"hires_scale": 1.5, "hires_steps": 2}))
    assert decoded_rows == [1, 1, 1, 1]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_batches_decode_one_picture_at_a_time(
    tmp_path: Path, decoded_rows: list[int], family: str
) -> None:
    write_tiny_model(tmp_path / family, family=family)
    Engine(tmp_path, device="cpu").render(cat(count=2, sampler="Euler", model=family))
    assert decoded_rows == [1, 1]


def test_pictures_decoded_one_at_a_time_are_those_of_a_batched_decode(
    engine: Engine, pixels: PixelReader, monkeypatch: pytest.MonkeyPatch, decoded_rows: list[int]
) -> None:
    request = cat(count=4, sampler="Euler a")
    sliced = [pixels(image.png) for image in engine.render(request)]
    monkeypatch.setattr(AutoencoderKL, "enable_slicing", lambda self: None)
    batched = [pixels(image.png) for image in engine.render(request)]
    assert decoded_rows == [1, 1, 1, 1, 4]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(sliced, batched, strict=True))


def test_the_peak_estimate_counts_one_picture_s_decode() -> None:
    vae = [TensorInfo("decoder.conv_out.weight", (3, 128, 3, 3), 0)]
    denoiser = [TensorInfo("conv_in.weight", (8, 4, 3, 3), 0)]  # a denoiser too narrow to count
    peak = peak_bytes(0, 1024, denoiser, vae, 2, transformer=False, guidance_batches=2)
    assert peak == VAE_DECODE_COPIES * 128 * 1024**2 * 2  # 2 GiB in float16, not 8 for four
