"""Each benchmark's smallest configuration, run so it cannot rot as the code it drives changes."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.cuda_paths import TXT2IMG, CheckedEngine, check_path
from benchmarks.device_busy import measure
from benchmarks.gpu import (
    Family,
    Levers,
    RunSettings,
    benchmark_family,
    build_random_pipeline,
    goals,
    variants_for,
)
from benchmarks.interactions import (
    FAKE_MODES,
    check_arguments,
    percentile,
    run_load,
    slowed_database,
)
from inference.tiny import write_tiny_model
from tests.support.compiled_code import compiled_code_kept

ScriptReport = Callable[..., dict[str, Any]]


@pytest.mark.parametrize("fake", FAKE_MODES)
async def test_interaction_load_answers_every_request_exactly_once(
    tmp_path: Path, fake: str
) -> None:
    report = (await run_load(requests=20, members=5, data_dir=tmp_path, fake=fake)).report()
    assert report["fake_discord"] == fake
    assert report["acknowledged"] == 20
    assert (report["results_arrived"], report["lost"], report["duplicated"]) == (20, 0, 0)
    assert report["protocol_violations"] == 0, report["violation_details"]
    # Each result comes after its own acknowledgement, so every percentile does too.
    assert report["time_to_result"]["p99_ms"] >= report["time_to_ack"]["p99_ms"] > 0
    assert report["cpu_s_to_last_ack"] is not None  # measured at the last acknowledgement
    # The fake's CPU is counted apart exactly when it has a process of its own.
    assert (report["fake_cpu_s_to_last_ack"] is not None) == (fake == "process")


async def test_a_slowed_database_slows_the_bot_s_statements_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """``--sqlite-delay-ms``: the bot's own statements wait (so a burst's reads from SQLite
    show), every request is still answered once, and the database is as fast again after."""
    with slowed_database(2.0) as slowed:
        report = (await run_load(20, 5, tmp_path, fake="in-process")).report()
    assert slowed[0] > 20  # at least the journal's writes of 20 jobs
    assert (report["results_arrived"], report["lost"], report["duplicated"]) == (20, 0, 0)
    with slowed_database(0.0) as untouched:
        await run_load(5, 5, tmp_path / "again", fake="in-process")
    assert untouched == [0]
    with slowed_database(2.0) as slowed_again:
        pass
    await run_load(5, 5, tmp_path / "after", fake="in-process")
    assert slowed_again == [0]  # gone once the block ended


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


def test_gpu_benchmark_runs_every_variant_on_cpu_with_the_tiny_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levers = Levers(no_vae_upcast=True)  # a tuned variant without compiling (slow on a CPU)
    run = RunSettings("cpu", torch.float32, size=64, steps=2, runs=1, levers=levers, backlog_jobs=3)
    resets = compiled_code_kept(monkeypatch)
    report = benchmark_family("sd15", tmp_path, run, tiny=True)
    assert resets  # each variant starts from a released device, as on a GPU
    assert variants_for(levers) == ("plain", "easel", "easel_tuned")
    for variant in variants_for(levers):
        assert report[variant]["it_per_s"] > 0
        assert report[variant]["grid_2x2_s"] > 0
        assert report[variant]["first_picture_s"] > 0
        assert report[variant]["peak_memory_mib"] is None  # CUDA only
        assert report[variant]["background_compile"] is None  # EASEL_COMPILE=auto: not on CPU
        assert "AttnProcessor" in report[variant]["attention"]
    assert report["plain"]["backlog"] is None  # plain diffusers has no queue
    # The first job of a bot whose warm start ran: the model loaded and stepped before it.
    warm_start = report["easel"]["warm_start"]
    assert warm_start["warmed"] is True
    assert warm_start["warm_up_s"] > 0 and warm_start["first_job_s"] > 0
    assert report["plain"]["warm_start"] is None and report["easel_tuned"]["warm_start"] is None
    for variant in ("easel", "easel_tuned"):
        backlog = report[variant]["backlog"]
        assert backlog["jobs"] == 3 and backlog["render_calls"] >= 1
        assert 0 < backlog["device_busy_fraction"] <= 1
    assert set(report["ratios"]) == {"easel_vs_plain", "easel_tuned_vs_plain"}
    assert set(report["ratios"]["easel_vs_plain"]) == {
        "it_per_s",
        "grid_speedup",
        "first_picture_speedup",
    }
    assert report["goals"] == {}  # stated for a GPU at native sizes


def test_gpu_benchmark_compares_compiled_plain_diffusers_when_asked() -> None:
    # Compiling on the CPU takes minutes, so the smoke run above leaves it out; the list of
    # variants says what a --compile run measures.
    assert variants_for(Levers(compile_unet=True)) == (
        "plain",
        "plain_compiled",
        "easel",
        "easel_tuned",
    )
    assert variants_for(Levers()) == ("plain", "easel")
    # A session can split a long run; each part still measures plain diffusers first.
    chosen = RunSettings("cuda", torch.float16, 512, 25, variants=("easel_tuned", "plain_compiled"))
    assert chosen.variant_list() == ("plain", "easel_tuned", "plain_compiled")


def test_gpu_goals_are_judged_only_where_the_run_measured_easel_as_shipped() -> None:
    # A CUDA session's compiled-baseline part (--variants plain plain_compiled) measures no
    # "easel": its figures must still be printed, not lost to a KeyError after minutes of work.
    plain = {"it_per_s": 35.0, "grid_2x2_s": 1.0}
    baseline_only = RunSettings("cuda", torch.float16, 512, 25, variants=("plain_compiled",))
    assert goals("sd15", baseline_only, {"plain": plain, "plain_compiled": plain}) == {}
    shipped = {"it_per_s": 90.0, "grid_2x2_s": 0.6}
    judged = goals(
        "sd15", RunSettings("cuda", torch.float16, 512, 25), {"plain": plain, "easel": shipped}
    )
    assert (judged["it_per_s_met"], judged["grid_met"]) == (True, False)


class _PoisonedEngine(CheckedEngine):
    """A UNet whose first convolution turns everything into NaN."""

    def _load_pipeline(self, entry: Any) -> Any:
        pipeline = super()._load_pipeline(entry)
        pipeline.unet.conv_in.weight.data.fill_(float("nan"))
        return pipeline


# The poisoned render's NaN pixels meet numpy's cast to uint8 on their way to a PNG.
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_engine_path_pass_passes_a_sound_render_and_catches_nan(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny", family="sd15", seed=0)
    sound = check_path(CheckedEngine(tmp_path, "cpu"), [TXT2IMG])
    assert (sound["ok"], sound["finite"], sound["max_rerun_difference"]) == (True, True, 0)
    broken = check_path(_PoisonedEngine(tmp_path, "cpu"), [TXT2IMG])
    assert not broken["ok"] and not broken["finite"]
    assert "tiny.unet.conv_in" in broken["non_finite_in"]


@pytest.fixture
def script_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[ScriptReport]:
    """The script run as ``__main__`` in this Python: its JSON report from standard output.
    Torch's thread count is put back (two scripts pin it to one)."""
    threads = torch.get_num_threads()

    def run(script: str, *arguments: str) -> dict[str, Any]:
        path = Path(__file__).resolve().parents[2] / "benchmarks" / script
        monkeypatch.setattr(sys, "argv", [str(path), *arguments])
        capsys.readouterr()
        runpy.run_path(str(path), run_name="__main__")
        report: dict[str, Any] = json.loads(capsys.readouterr().out)
        return report

    yield run
    torch.set_num_threads(threads)


def test_upscale_benchmark_compares_tiled_with_whole(
    script_report: ScriptReport, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The script measures each upscale in a Python of its own, so that its peak memory is its
    # own; here each of the two commands it builds runs in this process instead (a fresh
    # Python pays torch's and spandrel's imports again: about 10 s each on a busy CI machine).
    # That a fresh Python, with the path the script gives it, imports what a measurement
    # imports (this process has them imported already) is shown once, by the script's own
    # measurement of a file that is not there: refused by the load, after every import.
    root = Path(__file__).resolve().parents[2]
    script = str(root / "benchmarks" / "upscale.py")
    missing = tmp_path / "missing.safetensors"
    fresh = subprocess.run(
        [sys.executable, script, "--measure", str(missing), "24", "--size", "8"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert fresh.returncode != 0
    assert fresh.stderr.rstrip().endswith(
        "upscaler 'bench' (missing.safetensors) is no longer installed on this device"
    ), fresh.stderr
    commands: list[list[str]] = []

    def run_here(command: list[str], **_options: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        with monkeypatch.context() as child, contextlib.redirect_stdout(io.StringIO()) as out:
            child.setattr(sys, "argv", command[1:])
            runpy.run_path(command[1], run_name="__main__")
        return subprocess.CompletedProcess(command, 0, out.getvalue(), "")

    monkeypatch.setattr(subprocess, "run", run_here)
    report = script_report(
        "upscale.py", "--size", "48", "--filters", "8", "--blocks", "1", "--tile", "24"
    )
    child = [sys.executable, script, "--measure"]
    assert [command[:3] for command in commands] == [child, child]
    assert [command[4:] for command in commands] == [
        ["24", "--size", "48", "--device", "cpu"],
        ["48", "--size", "48", "--device", "cpu"],
    ]
    assert report["picture"] == "48x48 -> 192x192"
    assert report["tiled"]["seconds"] > 0 and report["whole"]["seconds"] > 0
    assert report["tiled"]["peak_mib"] >= 0 and report["whole"]["peak_mib"] >= 0


def test_dashboard_poll_benchmark_times_the_apps_gallery_queries(
    script_report: ScriptReport,
) -> None:
    report = script_report("dashboard_poll.py", "--jobs", "50", "--channels", "2")
    for indexes in ("without_0011", "with_0011"):
        assert set(report[indexes]) == {"channels_ms", "gallery_ms"}
        assert all(ms > 0 for ms in report[indexes].values())


def test_preview_benchmark_compares_a_preview_with_a_decode(script_report: ScriptReport) -> None:
    report = script_report("preview.py", "--size", "64", "--count", "1", "--runs", "1")
    assert report["pictures"] == "1 x 64x64"
    assert report["preview_ms"] > 0 and report["decode_over_preview"] > 0


def test_fast_mode_benchmark_compares_fast_with_plain(script_report: ScriptReport) -> None:
    arguments = ("--unet", "tiny", "--size", "64", "--steps", "4", "--seeds", "1", "--repeats", "1")
    report = script_report("fast_mode.py", *arguments)
    assert report["fast_repeatable"] is True and report["cache_interval"] == 3
    assert report["speedup"] > 0 and report["psnr_db_min"] > 0


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_full_size_random_pipeline_builds_its_networks_on_another_device(family: Family) -> None:
    # "meta" stands in for CUDA here: a scheduler constructed under torch.device("cuda") called
    # numpy on a device tensor and crashed the GPU benchmark before it printed anything.
    pipeline = build_random_pipeline(family, "meta", torch.float16, seed=0)
    assert pipeline.unet.device.type == "meta"
    assert pipeline.text_encoder.device.type == "meta"
    assert pipeline.scheduler.sigmas.device.type == "cpu"


async def test_device_busy_benchmark_reports_idle_fractions_of_a_backlog(tmp_path: Path) -> None:
    report = await measure(tmp_path, jobs=1, size=64, steps=1, device="cpu", max_batch=1)
    assert report["render_calls"] == 1 and report["jobs"] == 1
    for key in ("device_idle_fraction", "device_thread_idle_fraction"):
        assert isinstance(report[key], float) and 0 <= report[key] <= 1
    assert isinstance(report["span_s"], float) and report["span_s"] > 0


def test_delivery_benchmark_times_a_grid_a_picture_and_a_batchs_members(
    script_report: ScriptReport,
) -> None:
    arguments = ("--size", "64", "--steps", "1", "--runs", "1", "--upload-ms", "50")
    report = script_report("delivery.py", *arguments)
    assert report["grid_ms"] > 0 and report["single_ms"] > 0
    # Four members' jobs of one render call; each delivery waits its own 50 ms upload.
    assert len(report["batch_ms"]) == 4 and min(report["batch_ms"]) >= 50


def test_step_overhead_benchmark_times_both_loops_per_sampler(script_report: ScriptReport) -> None:
    report = script_report("step_overhead.py", "--steps", "6", "--runs", "1", "--sampler", "Euler")
    figures = report["samplers"]["Euler"]
    assert figures["plain_ms_per_step"] > 0 and figures["easel_ms_per_step"] > 0
    assert figures["easel_extra_ms_per_step"] == pytest.approx(
        figures["easel_ms_per_step"] - figures["plain_ms_per_step"], abs=0.002
    )


def test_step_profile_benchmark_isolates_one_step_of_each_loop(script_report: ScriptReport) -> None:
    report = script_report(
        "step_profile.py", "--device", "cpu", "--steps", "1", "--extra", "1", "--sampler", "Euler a"
    )
    for side in ("plain", "easel"):
        # One step of the tiny UNet under CFG is hundreds of operators; on a CPU no kernels.
        assert report[side]["operators_per_step"] > 100
        assert report[side]["kernels_per_step"] == 0
    assert report["operators_easel_minus_plain"], "the two loops issue different operators"
    counts = report["counts"]["Euler a"]
    for side in ("plain", "easel"):
        assert counts[side]["operators_per_step"] > 100
        assert counts[side]["python_calls_per_step"] > 1000
        # The tiny UNet's 8 attention blocks (self and cross), with diffusers' own processor.
        assert counts[side]["attention_processor_calls_per_step"] == {"AttnProcessor2_0": 8}
        # On the CPU nothing crosses to a device; the host waits are counted all the same.
        assert counts[side]["host_to_device_per_step"] == 0
        assert counts[side]["syncs_per_step"] == 0
    # Easel's step makes no tensor of host data (a list as an index was one per step).
    assert counts["easel"]["host_born"] == {}


def test_dispatcher_benchmark_times_the_compiled_unets_dispatcher_without_compiling(
    script_report: ScriptReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # the Compiler sets it
    report = script_report("dispatcher.py", "--calls", "50", "--repeats", "1")
    assert report["tensor_arguments"] == 3  # sample, timestep, text states
    assert report["dispatcher_overhead_us"] > 0
    assert set(report["parts_us"]) == {
        "call_key",
        "key_lookup",
        "lora_and_hook_check",
        "lock",
        "fail_on_recompile_stance",
    }
    graphs = report["cuda_graphs"]
    assert graphs["replayed_call_us"] > 0
    assert set(graphs["frozen_state_check_us"]) == {
        "sd15_32_attention_modules",
        "sdxl_140_attention_modules",
    }


def test_planning_threads_benchmark_answers_the_cheap_prompt(script_report: ScriptReport) -> None:
    [round_] = script_report("planning_threads.py", "--delays", "2.6", "--one-server")
    assert (round_["costly_servers"], round_["cheap_sent_after_s"]) == (1, 2.6)
    # Sent once the costly prompts' budget is spent: their threads stop, and it is planned.
    assert round_["cheap_answer"] == "planned"
    assert all(answer.startswith("refused") for answer in round_["costly_answers"])
    assert round_["threads_all_free_after_s"] > 0


def test_deep_queue_benchmark_times_a_submit_a_cancel_and_a_poll(
    script_report: ScriptReport,
) -> None:
    report = script_report("deep_queue.py", "--depths", "300:50", "--tries", "2")
    [depth] = report["depths"]
    assert (depth["queued"], depth["members"]) == (300, 50)
    figures = ("submit_and_state", "cancel_and_state", "dashboard_snapshot", "whole_snapshot")
    for figure in (*figures, "aging_burst"):
        assert depth[f"{figure}_ms"] > 0
