"""Full-size GPU throughput: Easel against a plain diffusers pipeline, same weights, one run.

Random-weight SD1.5 / SDXL models are built from the configs shipped in ``inference/configs``
(no download) and written to a temporary diffusers folder, so the ``Engine`` loads them like
real ones. The variants render the same requests, one variant in memory at a time:

- ``plain``: ``DiffusionPipeline.from_pretrained`` with default settings, PNGs encoded with PIL;
- ``plain_compiled`` (``--compile``): the same with ``pipeline.unet.compile()`` (inductor,
  default mode): the baseline a diffusers user gets with one line;
- ``easel``: Easel as shipped: the ``Engine`` behind its ``DeviceWorker`` and the real
  ``JobQueue`` (journal, quota, PNG with infotext, files written, delivery), with the settings
  the product uses by default (on CUDA: the UNet replayed from CUDA graphs);
- ``easel_eager``: the same with ``EASEL_CUDA_GRAPHS=false``: what the graphs are worth;
- ``easel_tuned`` (``--compile``, ``--no-vae-upcast`` or ``--channels-last``): the eager engine plus
  benchmark-only levers (``torch.compile`` of the UNet; no fp32 VAE upcast, only safe with an
  fp16-fixed VAE; UNet and VAE in channels_last memory format).

Each variant reports, after warm-up renders (each batch shape once; the device synchronised
around every timing):

- ``first_picture_s``: from nothing loaded to the first picture's PNG (load, any compile);
- ``warm_start`` (``easel`` only, ``null`` for the others): the first job's latency as a bot
  with ``EASEL_WARM_START=on`` shows it, run after the other figures on a fresh engine and
  queue: ``warm_up_s`` from the queue's start until the warm start has loaded the model and run
  its step, then ``first_job_s`` from submitting one picture to its PNG (``warmed``: whether
  the warm start finished); it costs one model load, one step and one job of device time;
- ``it_per_s``: sampling steps per second, batch 1, first to last step end (synchronised at
  each step end), so prompt encoding and VAE decode are not in it;
- ``grid_2x2_s``: a count-4 request end to end, PNGs included (through the queue for Easel,
  and the 2x2 grid the bot posts composed as its delivery does; plain: its four PNGs);
- ``backlog``: Easel only: ``BACKLOG_JOBS`` one-picture jobs submitted at once through the
  queue; ``device_busy_fraction`` is the time the device thread spent inside the engine
  (synchronised at each render's end) over the wall time from first submit to last delivery;
- ``peak_memory_mib``: ``torch.cuda.max_memory_allocated`` for the variant (CUDA; ``null`` on
  the CPU, where the report gives the process's peak resident set instead);
- ``cuda_graphs``: Easel's UNet calls, how many replayed a graph, and the graphs recorded
  (``null`` when the UNet is not replayed from graphs).

Ratios are to plain diffusers in the same run. Goals (issue 12, Easel as shipped, fp16 on a
GPU): SD1.5 512^2 it/s >= 2.5x plain; 2x2 grid >= 2x faster than plain; SDXL 1024^2 30-step
2x2 grid <= 4.5 s. Prints JSON.

    python benchmarks/gpu.py [--family sd15 sdxl] [--device cuda] [--steps 30] [--compile]
        [--variants plain easel ...] [--runs 3] [--backlog 8] [--compile-wait 420]
    python benchmarks/gpu.py --device cpu --family sd15 --size 64 --steps 2 --tiny   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import itertools
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import aiosqlite
import diffusers
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.job_queue import Arrivals
from benchmarks.timing import TimedEngine, synchronize
from bot.engines import engine_factory_for
from bot.jobs.queue import JobQueue, Submission
from bot.settings import load_settings
from db.database import connect
from inference.cuda_graphs import graphed_unet
from inference.engine import Engine
from inference.tiny import CONFIGS_DIR, load_clip_tokenizer, write_tiny_model
from inference.types import RenderRequest
from inference.worker import DeviceWorker

Family = Literal["sd15", "sdxl"]
Variant = Literal["plain", "plain_compiled", "easel", "easel_eager", "easel_tuned"]
CONFIG_FOLDERS: dict[Family, str] = {"sd15": "sd15", "sdxl": "sdxl-base"}
NATIVE_SIZES: dict[Family, int] = {"sd15": 512, "sdxl": 1024}
# OpenCLIP's tokenizer (SDXL's second) pads with "!", OpenAI CLIP's with its end token.
TOKENIZER_PADS = {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}
GRID_COUNT = 4
BACKLOG_JOBS = 8
# How long a variant may take to finish compiling in the background before it is timed
# (``--compile-wait``; the report says whether it finished).
COMPILE_WAIT_S = 420.0
# How long the warm start may take before the first job is submitted anyway.
WARM_START_WAIT_S = 300.0
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
MODEL_NAME = "random"
SD15_IT_S_GOAL_RATIO = 2.5
SD15_GRID_GOAL_SPEEDUP = 2.0
SDXL_GRID_GOAL_S = 4.5


@dataclass(frozen=True)
class Levers:
    """Benchmark-only speed levers: ``compile`` also adds the compiled plain baseline."""

    compile_unet: bool = False
    no_vae_upcast: bool = False
    channels_last: bool = False


@dataclass(frozen=True)
class RunSettings:
    """What every variant of one family is measured with."""

    device: str
    dtype: torch.dtype
    size: int
    steps: int
    runs: int = 3
    levers: Levers = Levers()
    backlog_jobs: int = BACKLOG_JOBS
    compile_wait_s: float = COMPILE_WAIT_S
    # None: what the levers call for (variants_for); plain always comes first (the ratios').
    variants: tuple[Variant, ...] | None = None

    def variant_list(self) -> tuple[Variant, ...]:
        chosen = self.variants or variants_for(self.levers)
        return ("plain", *(variant for variant in chosen if variant != "plain"))


def variants_for(levers: Levers) -> tuple[Variant, ...]:
    compiled: tuple[Variant, ...] = ("plain_compiled",) if levers.compile_unet else ()
    tuned: tuple[Variant, ...] = ("easel_tuned",) if levers != Levers() else ()
    return ("plain", *compiled, "easel", *tuned)


# -- the random full-size model ------------------------------------------------------------


def build_random_pipeline(family: Family, device: str, dtype: torch.dtype, seed: int) -> Any:
    """A full-size pipeline with random weights, every component made from the shipped config.

    Weights are initialised on ``device`` (seconds on a GPU, where CPU init of SDXL is slow);
    only the networks are: a scheduler made under ``torch.device("cuda")`` calls numpy on CUDA
    tensors in its constructor and crashes.
    """
    config_dir = CONFIGS_DIR / CONFIG_FOLDERS[family]
    index: dict[str, Any] = diffusers.DiffusionPipeline.load_config(str(config_dir))
    arguments: dict[str, Any] = {}
    torch.manual_seed(seed)
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if not isinstance(value, list):  # a pipeline setting, e.g. requires_safety_checker
            arguments[name] = value
        elif value[1] is None:  # a component this model goes without (safety checker)
            arguments[name] = None
        else:
            arguments[name] = _random_component(name, value[0], value[1], config_dir, device)
    pipeline = getattr(diffusers, index["_class_name"])(**arguments)
    return pipeline.to(dtype=dtype)


def _random_component(
    name: str, library: str, class_name: str, config_dir: Path, device: str
) -> Any:
    if class_name == "CLIPTokenizer":
        return load_clip_tokenizer(TOKENIZER_PADS[name])
    if library == "diffusers":
        component_class = getattr(diffusers, class_name)
        config = component_class.load_config(str(config_dir / name))
        if not issubclass(component_class, torch.nn.Module):  # a scheduler: CPU numpy inside
            return component_class.from_config(config)
        with torch.device(device):
            return component_class.from_config(config)
    if library == "transformers":
        model_class = getattr(transformers, class_name)
        with torch.device(device):
            return model_class(model_class.config_class.from_pretrained(str(config_dir / name)))
    raise ValueError(f"{name}: no way to build a {library}.{class_name} from a config")


def write_model(
    models_dir: Path, family: Family, device: str, dtype: torch.dtype, tiny: bool
) -> tuple[Path, float]:
    """Write the benchmark model as a diffusers folder; returns it and the seconds it took."""
    started = time.perf_counter()
    folder = models_dir / MODEL_NAME
    if tiny:
        write_tiny_model(folder, family)
    else:
        pipeline = build_random_pipeline(family, device, dtype, seed=0)
        pipeline.save_pretrained(folder, safe_serialization=True)
        del pipeline
        release_memory(device)
    return folder, time.perf_counter() - started


def release_memory(device: str) -> None:
    """Drop what the last variant left: compiled graphs (they hold its modules), then memory."""
    torch.compiler.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: str) -> float | None:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def process_peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- the variants --------------------------------------------------------------------------


class Renderer(Protocol):
    """One variant, loaded: ``render`` returns once ``count`` pictures are PNGs; with
    ``step_ends`` it appends the (synchronised) time of every sampling step's end."""

    attention: str

    async def render(self, count: int, step_ends: list[float] | None = None) -> None: ...

    async def backlog(self, jobs: int) -> dict[str, Any] | None: ...

    async def settle(self, timeout_s: float) -> dict[str, Any] | None:
        """Wait for what the variant compiles in the background, if anything."""
        ...

    async def close(self) -> None: ...

    def graph_counts(self) -> dict[str, int] | None:
        """Easel's UNet calls and graph replays so far (``None``: no graphs)."""
        ...


class PlainRenderer:
    """Plain diffusers on a thread of its own, as Easel's device thread is (on a loaded CPU a
    render on the main thread ran 3-25x slower than on a worker thread)."""

    def __init__(self, device: str, size: int, steps: int) -> None:
        self.device, self.size, self.steps = device, size, steps
        self.pipeline: Any = None
        self.attention = "not loaded"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plain-diffusers")

    async def open(self, folder: Path, dtype: torch.dtype, compile: bool) -> PlainRenderer:
        def load() -> None:
            # Diffusers' loaders are untyped; what comes back is an SD (XL) pipeline.
            loader: Any = diffusers.DiffusionPipeline
            self.pipeline = loader.from_pretrained(folder, dtype=dtype).to(self.device)
            self.pipeline.set_progress_bar_config(disable=True)
            if compile:
                self.pipeline.unet.compile()
            self.attention = attention_processor(self.pipeline.unet)

        await asyncio.get_running_loop().run_in_executor(self._thread, load)
        return self

    async def render(self, count: int, step_ends: list[float] | None = None) -> None:
        def step_end(_pipe: Any, _index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if step_ends is not None:
                synchronize(self.device)
                step_ends.append(time.perf_counter())
            return tensors

        def render() -> None:
            output = self.pipeline(
                PROMPT,
                num_images_per_prompt=count,
                num_inference_steps=self.steps,
                height=self.size,
                width=self.size,
                callback_on_step_end=step_end,
            )
            for image in output.images:
                png_bytes(image)

        await asyncio.get_running_loop().run_in_executor(self._thread, render)

    async def backlog(self, jobs: int) -> dict[str, Any] | None:
        return None  # plain diffusers has no queue to hold a backlog

    async def settle(self, timeout_s: float) -> dict[str, Any] | None:
        return None  # torch.compile compiles in the call that needs it (the warm-up)

    async def close(self) -> None:
        self.pipeline = None
        self._thread.shutdown(wait=True)

    def graph_counts(self) -> dict[str, int] | None:
        return None


class BenchEngine(Engine):
    """Our Engine with benchmark-only ``levers`` applied to each pipeline it loads (and no
    compiler of its own: a compiled UNet here is ``torch.compile``'s default)."""

    def __init__(self, models_dir: Path, device: str, dtype: torch.dtype, levers: Levers) -> None:
        super().__init__(models_dir, device=device, dtype=dtype)
        self.levers = levers

    def _load_pipeline(self, entry: Any) -> Any:
        pipeline = super()._load_pipeline(entry)
        if self.levers.compile_unet:
            pipeline.unet.compile()
        if self.levers.no_vae_upcast and hasattr(pipeline.vae.config, "force_upcast"):
            pipeline.vae.register_to_config(force_upcast=False)
        if self.levers.channels_last:
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.vae.to(memory_format=torch.channels_last)
        return pipeline


@dataclass
class WarmingTimedEngine(TimedEngine):
    """A timed engine the device worker warms up at the queue's start (``EASEL_WARM_START``),
    saying when that is over (``warmed``: set whether or not it succeeded)."""

    warmed: threading.Event = field(default_factory=threading.Event)
    warm_up_succeeded: bool = False

    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None:
        try:
            self.engine.warm_up(cancel, model)
            self.warm_up_succeeded = True
        finally:
            self.warmed.set()


class EaselRenderer:
    """Easel end to end without Discord: the real queue on a fresh database, one device."""

    def __init__(
        self,
        engine: TimedEngine,
        conn: aiosqlite.Connection,
        queue: JobQueue,
        arrivals: Arrivals,
        request: RenderRequest,
    ) -> None:
        self.engine, self.conn, self.queue, self.arrivals = engine, conn, queue, arrivals
        self.request = request
        self.attention = "not loaded"
        self._users = itertools.count(1)  # a member per job: no per-member limit is reached

    @classmethod
    async def open(
        cls, scratch: Path, engine: Engine, size: int, steps: int, warm_start: bool = False
    ) -> EaselRenderer:
        """``warm_start``: the worker warms the engine (a ``WarmingTimedEngine``) at start."""
        timed = WarmingTimedEngine(engine) if warm_start else TimedEngine(engine)
        worker = DeviceWorker(engine.device, lambda _device: timed, warm_start=warm_start)
        conn = await connect(scratch / "easel.sqlite3")
        queue = JobQueue(conn, [worker], scratch / "images")
        arrivals = Arrivals(posting=True)  # the posted grid composed, as the bot does
        queue.set_sink(arrivals)
        await queue.start()
        request = RenderRequest(
            PROMPT, seed=1, steps=steps, width=size, height=size, model=MODEL_NAME
        )
        return cls(timed, conn, queue, arrivals, request)

    async def _submit(self, count: int) -> str:
        request = replace(self.request, count=count)
        return await self.queue.submit(Submission("imagine", request, user_id=next(self._users)))

    async def render(self, count: int, step_ends: list[float] | None = None) -> None:
        self.engine.step_ends = step_ends
        try:
            await self.arrivals.wait_for([await self._submit(count)])
        finally:
            self.engine.step_ends = None
        if self.attention == "not loaded":
            self.attention = attention_processor(loaded_pipeline(self.engine.engine).unet)

    async def backlog(self, jobs: int) -> dict[str, Any]:
        self.engine.clear()
        started = time.perf_counter()
        job_ids = [await self._submit(1) for _ in range(jobs)]
        await self.arrivals.wait_for(job_ids)
        ended = max(self.arrivals.finished[job_id] for job_id in job_ids)
        busy = self.engine.renders.busy_s(since=started, until=ended)
        return {
            "jobs": jobs,
            "wall_s": round(ended - started, 3),
            "device_busy_fraction": round(busy / (ended - started), 3),
            "render_calls": len(self.engine.renders.intervals),
        }

    async def settle(self, timeout_s: float) -> dict[str, Any] | None:
        compiler = self.engine.engine.compiler  # EASEL_COMPILE's, when it is on
        if compiler is None:
            return None
        started = time.perf_counter()
        finished = await asyncio.to_thread(compiler.wait_idle, timeout_s)
        return {"wait_s": round(time.perf_counter() - started, 3), "finished": finished}

    async def close(self) -> None:
        await self.queue.stop()
        await self.conn.close()

    def graph_counts(self) -> dict[str, int] | None:
        engine = self.engine.engine
        if MODEL_NAME not in engine.models.loaded:
            return None
        unet = graphed_unet(loaded_pipeline(engine))
        if unet is None:
            return None
        return {"calls": unet.calls, "replays": unet.replays, "recorded": unet.recordings}


async def first_job_after_warm_start(
    folder: Path, scratch: Path, run: RunSettings
) -> dict[str, Any]:
    """Easel as shipped with its warm start on: the queue starts and warms the engine, then
    one one-picture job is submitted; the seconds to warm and from submit to its PNG."""
    synchronize(run.device)
    started = time.perf_counter()
    engine = shipped_engine(folder.parent, scratch, run.device)
    renderer = await EaselRenderer.open(scratch, engine, run.size, run.steps, warm_start=True)
    timed = renderer.engine
    assert isinstance(timed, WarmingTimedEngine)
    try:
        await asyncio.to_thread(timed.warmed.wait, WARM_START_WAIT_S)
        synchronize(run.device)
        warmed = time.perf_counter()
        await renderer.render(1)
        synchronize(run.device)
        first_job_s = time.perf_counter() - warmed
    finally:
        await renderer.close()
    return {
        "warm_up_s": round(warmed - started, 3),
        "first_job_s": round(first_job_s, 3),
        "warmed": timed.warm_up_succeeded,
    }


def loaded_pipeline(engine: Engine) -> Any:
    # The engine keeps its pipelines to itself; a benchmark may look.
    return engine.models.loaded[MODEL_NAME].pipeline


def shipped_engine(
    models_dir: Path, data_dir: Path, device: str, cuda_graphs: bool = True
) -> Engine:
    """The engine the bot builds for ``device`` (bot.engines), with this environment's settings,
    EASEL_COMPILE included; no .env file is read. ``cuda_graphs=False`` turns
    EASEL_CUDA_GRAPHS off (it is left as the environment says otherwise)."""
    settings = load_settings(env_file=None)
    settings = settings.model_copy(
        update={
            "models_dir": models_dir,
            "data_dir": data_dir,
            "cuda_graphs": settings.cuda_graphs and cuda_graphs,
        }
    )
    engine = engine_factory_for(settings)(device)
    assert isinstance(engine, Engine)
    return engine


def attention_processor(unet: Any) -> str:
    names = {type(processor).__name__ for processor in unet.attn_processors.values()}
    return ",".join(sorted(names))


async def open_variant(variant: Variant, folder: Path, scratch: Path, run: RunSettings) -> Renderer:
    if variant in ("plain", "plain_compiled"):
        plain = PlainRenderer(run.device, run.size, run.steps)
        return await plain.open(folder, run.dtype, compile=variant == "plain_compiled")
    if variant in ("easel", "easel_eager"):
        engine = shipped_engine(folder.parent, scratch, run.device, variant == "easel")
    else:
        engine = BenchEngine(folder.parent, run.device, run.dtype, run.levers)
    return await EaselRenderer.open(scratch, engine, run.size, run.steps)


async def measure(
    variant: Variant, folder: Path, scratch: Path, run: RunSettings
) -> dict[str, Any]:
    """One variant from nothing loaded to its last render; medians over ``run.runs``."""
    synchronize(run.device)
    started = time.perf_counter()
    renderer = await open_variant(variant, folder, scratch, run)
    await renderer.render(1)
    synchronize(run.device)
    first_picture_s = time.perf_counter() - started
    rates: list[float] = []
    grid_seconds: list[float] = []
    try:
        # Easel's first jobs run eager while it compiles; what follows is its steady state.
        background_compile = await renderer.settle(run.compile_wait_s)
        await renderer.render(GRID_COUNT)  # warm-up: each batch shape once (compile specialises)
        for _ in range(run.runs):
            step_ends: list[float] = []
            await renderer.render(1, step_ends)
            # First to last step end: the loop's pace, without prompt encoding and VAE decode.
            rates.append((len(step_ends) - 1) / (step_ends[-1] - step_ends[0]))
            synchronize(run.device)
            grid_started = time.perf_counter()
            await renderer.render(GRID_COUNT)
            synchronize(run.device)
            grid_seconds.append(time.perf_counter() - grid_started)
        backlog = await renderer.backlog(run.backlog_jobs)
        graphs = renderer.graph_counts()
    finally:
        await renderer.close()
    peak_memory = peak_memory_mib(run.device)
    warm_start = None
    if variant == "easel":
        release_memory(run.device)
        warm_scratch = Path(tempfile.mkdtemp(dir=scratch, prefix="warm-start-"))
        warm_start = await first_job_after_warm_start(folder, warm_scratch, run)
    return {
        "attention": renderer.attention,
        "first_picture_s": round(first_picture_s, 3),
        "warm_start": warm_start,
        "background_compile": background_compile,
        "it_per_s": round(statistics.median(rates), 3),
        "grid_2x2_s": round(statistics.median(grid_seconds), 3),
        "backlog": backlog,
        "peak_memory_mib": peak_memory,
        "cuda_graphs": graphs,
    }


def benchmark_family(
    family: Family, models_dir: Path, run: RunSettings, tiny: bool
) -> dict[str, Any]:
    folder, build_seconds = write_model(models_dir / family, family, run.device, run.dtype, tiny)
    variants = run.variant_list()
    results: dict[str, Any] = {}
    for variant in variants:
        release_memory(run.device)  # each variant starts from an empty device and fresh peak
        scratch = Path(tempfile.mkdtemp(dir=models_dir, prefix=f"{variant}-"))
        results[variant] = asyncio.run(measure(variant, folder, scratch, run))
    release_memory(run.device)
    plain = results["plain"]
    ratios = {
        f"{variant}_vs_plain": {
            "it_per_s": round(results[variant]["it_per_s"] / plain["it_per_s"], 3),
            "grid_speedup": round(plain["grid_2x2_s"] / results[variant]["grid_2x2_s"], 3),
            "first_picture_speedup": round(
                plain["first_picture_s"] / results[variant]["first_picture_s"], 3
            ),
        }
        for variant in variants[1:]
    }
    return {
        "family": family,
        "model": "tiny" if tiny else "full-size random weights",
        "size": f"{run.size}x{run.size}",
        "steps": run.steps,
        "build_and_write_s": round(build_seconds, 2),
        **results,
        "ratios": ratios,
        "goals": goals(family, run, results),
    }


def goals(family: Family, run: RunSettings, results: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's goals for Easel as shipped, where this run's settings are theirs (and the
    run measured Easel as shipped: ``--variants plain plain_compiled`` leaves it out)."""
    if not run.device.startswith("cuda") or "easel" not in results:
        return {}
    easel, plain = results["easel"], results["plain"]
    if family == "sd15" and run.size == 512:
        ratio = easel["it_per_s"] / plain["it_per_s"]
        speedup = plain["grid_2x2_s"] / easel["grid_2x2_s"]
        return {
            "it_per_s_ratio_goal": SD15_IT_S_GOAL_RATIO,
            "it_per_s_met": ratio >= SD15_IT_S_GOAL_RATIO,
            "grid_speedup_goal": SD15_GRID_GOAL_SPEEDUP,
            "grid_met": speedup >= SD15_GRID_GOAL_SPEEDUP,
        }
    if family == "sdxl" and run.size == 1024 and run.steps == 30:
        grid = easel["grid_2x2_s"]
        return {"grid_2x2_s_goal": SDXL_GRID_GOAL_S, "met": grid <= SDXL_GRID_GOAL_S}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", choices=("sd15", "sdxl"), default=["sd15", "sdxl"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, help="square side in pixels (default: native)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="add plain diffusers with torch.compile, and Easel with a compiled UNet",
    )
    parser.add_argument(
        "--no-vae-upcast",
        action="store_true",
        help="tuned variant decodes in fp16 (what an fp16-fixed VAE allows)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="tuned variant keeps UNet and VAE in channels_last (NHWC) memory format",
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (smoke runs)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=get_args(Variant),
        help="measure only these (plain always runs: the ratios are to it)",
    )
    parser.add_argument("--backlog", type=int, default=BACKLOG_JOBS, help="jobs in the backlog")
    parser.add_argument(
        "--compile-wait",
        type=float,
        default=COMPILE_WAIT_S,
        help="seconds Easel's background compile may take before it is timed anyway",
    )
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (it/s needs two step ends), got {args.steps}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.backlog < 1:
        parser.error(f"--backlog must be at least 1, got {args.backlog}")
    if args.size is not None and (args.size < 64 or args.size % 8):
        parser.error(f"--size must be a multiple of 8, at least 64, got {args.size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu for a smoke run)")
    # Half precision on GPUs, as the Engine picks; CPUs have no fast fp16 kernels.
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    levers = Levers(
        compile_unet=args.compile,
        no_vae_upcast=args.no_vae_upcast,
        channels_last=args.channels_last,
    )
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "easel_compile": load_settings(env_file=None).compile,  # EASEL_COMPILE, as shipped
        "levers": vars(levers),
        "families": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.family:
            run = RunSettings(
                args.device,
                dtype,
                args.size or NATIVE_SIZES[family],
                args.steps,
                args.runs,
                levers,
                args.backlog,
                args.compile_wait,
                tuple(args.variants) if args.variants else None,
            )
            report["families"].append(benchmark_family(family, Path(scratch), run, args.tiny))
    report["process_peak_rss_mib"] = process_peak_rss_mib()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
