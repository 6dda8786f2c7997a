"""The quantized-loading benchmark's smallest run, so it cannot rot before a GPU session."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.quantized import QUANTIZE_OF, benchmark
from tests.support.compiled_code import compiled_code_kept


def test_every_mode_renders_or_is_refused_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resets = compiled_code_kept(monkeypatch)
    report = benchmark("sd15", tmp_path, "cpu", size=64, steps=2, tiny=True)
    assert resets  # each mode starts from a released device, as on a GPU
    assert set(report) == set(QUANTIZE_OF)
    assert report["fp8"]["refused"].startswith("EASEL_QUANTIZE=fp8 needs a CUDA GPU")
    labels = {mode: report[mode]["quantization"] for mode in ("off", "int8", "gguf-q8")}
    assert labels == {"off": None, "int8": "int8", "gguf-q8": "Q8_0"}
    for mode in labels:
        figures = report[mode]
        assert figures["grid_2x2_s"] > 0
        assert figures["peak_memory_mib"] is None  # CUDA only
        assert figures["estimated_peak_mib"] > figures["weights_mib"] > 0
    # Quantized, the denoiser's linear weights take fewer bytes than in float32.
    assert report["int8"]["weights_mib"] < report["off"]["weights_mib"]
    assert report["gguf-q8"]["weights_mib"] < report["off"]["weights_mib"]
