"""Each benchmark's smallest configuration, run so it cannot rot as the code it drives changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.gpu import VARIANTS, Family, Levers, benchmark_family, build_random_pipeline
from benchmarks.interactions import check_arguments, percentile, run_load


async def test_interaction_load_answers_every_request_exactly_once(tmp_path: Path) -> None:
    report = (await run_load(requests=20, members=5, data_dir=tmp_path)).report()
    assert report["acknowledged"] == 20
    assert (report["results_arrived"], report["lost"], report["duplicated"]) == (20, 0, 0)
    assert report["protocol_violations"] == 0, report["violation_details"]
    # Each result comes after its own acknowledgement, so every percentile does too.
    assert report["time_to_result"]["p99_ms"] >= report["time_to_ack"]["p99_ms"] > 0


def test_nearest_rank_percentile() -> None:
    sample = [float(value) for value in range(100, 0, -1)]
    assert percentile(sample, 0.50) == 50.0
    assert percentile(sample, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_load_beyond_the_daily_quota_is_refused_with_the_member_count_needed() -> None:
    with pytest.raises(SystemExit, match=r"quota of 100 images a day; use at least 5 members"):
        check_arguments(requests=500, members=2)
    with pytest.raises(SystemExit, match=r"--members must be in 1\.\.20"):
        check_arguments(requests=20, members=21)


def test_gpu_benchmark_runs_every_variant_on_cpu_with_the_tiny_model(tmp_path: Path) -> None:
    report = benchmark_family(
        "sd15",
        tmp_path,
        "cpu",
        torch.float32,
        size=64,
        steps=2,
        runs=1,
        levers=Levers(),
        tiny=True,
    )
    for variant in VARIANTS:
        assert report[variant]["it_per_s"] > 0
        assert report[variant]["grid_2x2_s"] > 0
        assert "AttnProcessor" in report[variant]["attention"]
    assert set(report["ratios"]) == {"easel_vs_plain", "easel_tuned_vs_plain"}
    assert report["goals"] == {}  # 64x64 is not the size the goals are stated for


def _script_report(script: str, *arguments: str) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, str(root / "benchmarks" / script), *arguments]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=root)
    report: dict[str, Any] = json.loads(output.stdout)
    return report


def test_upscale_benchmark_compares_tiled_with_whole() -> None:
    report = _script_report(
        "upscale.py", "--size", "48", "--filters", "8", "--blocks", "1", "--tile", "24"
    )
    assert report["picture"] == "48x48 -> 192x192"
    assert report["tiled"]["seconds"] > 0 and report["whole"]["seconds"] > 0
    assert report["tiled"]["peak_mib"] >= 0 and report["whole"]["peak_mib"] >= 0


def test_preview_benchmark_compares_a_preview_with_a_decode() -> None:
    report = _script_report("preview.py", "--size", "64", "--count", "1", "--runs", "1")
    assert report["pictures"] == "1 x 64x64"
    assert report["preview_ms"] > 0 and report["decode_over_preview"] > 0


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_full_size_random_pipeline_builds_its_networks_on_another_device(family: Family) -> None:
    # "meta" stands in for CUDA here: a scheduler constructed under torch.device("cuda") called
    # numpy on a device tensor and crashed the GPU benchmark before it printed anything.
    pipeline = build_random_pipeline(family, "meta", torch.float16, seed=0)
    assert pipeline.unet.device.type == "meta"
    assert pipeline.text_encoder.device.type == "meta"
    assert pipeline.scheduler.sigmas.device.type == "cpu"
