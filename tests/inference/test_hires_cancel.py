"""A stop that lands while a hires fix's first pass is decoded stops the render before its
hires pass: not its enlarge, its encode at four times the pixels and its first hires step
(the first check after the first pass was the end of that step). SD and flow families, tiny
models."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from diffusers import AutoencoderKL

from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderCancelled, RenderRequest

HIRES = {"hires_scale": 2.0, "hires_steps": 2, "hires_upscaler": "Lanczos"}


@pytest.fixture(scope="module")
def flow_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    directory = tmp_path_factory.mktemp("flow-models")
    write_tiny_model(directory / "sd3", family="sd3")
    return Engine(directory, preview_interval_s=0)


def encodes_after_a_stop_in_the_first_decode(
    engine: Engine, request: RenderRequest, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Render ``request``, stopped as its first pass's picture is decoded (the first VAE
    decode: previews are made without one); how many VAE encodes ran after the stop (a hires
    pass's img2img encodes its start)."""
    cancel = threading.Event()
    encodes_after = 0
    decode, encode = AutoencoderKL.decode, AutoencoderKL.encode

    def decoding(self: AutoencoderKL, *args: Any, **kwargs: Any) -> Any:
        cancel.set()
        return decode(self, *args, **kwargs)

    def encoding(self: AutoencoderKL, *args: Any, **kwargs: Any) -> Any:
        nonlocal encodes_after
        encodes_after += cancel.is_set()
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", decoding)
    monkeypatch.setattr(AutoencoderKL, "encode", encoding)
    with pytest.raises(RenderCancelled):
        engine.render(request, progress=lambda _report: None, cancel=cancel)
    return encodes_after


def test_an_sd_hires_fix_stopped_in_its_first_decode_runs_no_hires_work(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RenderRequest("a cat", seed=3, steps=2, width=64, height=64, options=HIRES)
    assert encodes_after_a_stop_in_the_first_decode(engine, request, monkeypatch) == 0


def test_a_flow_hires_fix_stopped_in_its_first_decode_runs_no_hires_work(
    flow_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RenderRequest(
        "a cat", seed=3, steps=2, width=64, height=64, model="sd3", sampler="Euler", options=HIRES
    )
    assert encodes_after_a_stop_in_the_first_decode(flow_engine, request, monkeypatch) == 0
