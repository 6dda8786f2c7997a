"""Full-size GPU throughput: our ``Engine`` against a plain diffusers pipeline, same weights.

Random-weight SD1.5 / SDXL models are built from the configs shipped in ``inference/configs``
(no download) and written to a temporary diffusers folder, so the ``Engine`` loads them like
real ones. Three variants render the same requests in one run:

- ``plain``: ``StableDiffusion(XL)Pipeline.from_pretrained`` with default settings;
- ``easel``: our ``Engine`` as shipped (fp16 on CUDA; diffusers' default SDPA attention);
- ``easel_tuned``: the Engine plus the speed levers it lacks — channels_last UNet/VAE,
  ``torch.compile`` of the UNet (``--compile``), no fp32 VAE upcast (``--no-vae-upcast``; only
  safe with an fp16-fixed VAE).

Each reports sampling it/s (batch 1; the device is synchronised at every step end so a step is
timed when it is done) and the end-to-end time of a 2x2 grid (count 4, PNGs included for the
Engine). Goals: >= 1.6x plain it/s on SD1.5 512^2; SDXL 1024^2 30-step grid <= 4.5 s (H100).
Prints JSON.

    python benchmarks/gpu.py [--family sd15 sdxl] [--device cuda] [--steps 30] [--compile]
    python benchmarks/gpu.py --device cpu --family sd15 --size 64 --steps 2 --tiny   # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engine import Engine
from inference.tiny import CONFIGS_DIR, load_clip_tokenizer, write_tiny_model
from inference.types import RenderRequest, StepProgress

Family = Literal["sd15", "sdxl"]
Variant = Literal["plain", "easel", "easel_tuned"]
VARIANTS: tuple[Variant, ...] = ("plain", "easel", "easel_tuned")
CONFIG_FOLDERS: dict[Family, str] = {"sd15": "sd15", "sdxl": "sdxl-base"}
NATIVE_SIZES: dict[Family, int] = {"sd15": 512, "sdxl": 1024}
# OpenCLIP's tokenizer (SDXL's second) pads with "!", OpenAI CLIP's with its end token.
TOKENIZER_PADS = {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}
GRID_COUNT = 4
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
MODEL_NAME = "random"
SD15_IT_S_GOAL_RATIO = 1.6
SDXL_GRID_GOAL_S = 4.5


@dataclass(frozen=True)
class Levers:
    """Speed levers the tuned Engine applies after loading a pipeline."""

    channels_last: bool = True
    compile_unet: bool = False
    no_vae_upcast: bool = False


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
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- the variants --------------------------------------------------------------------------


def apply_levers(pipeline: Any, levers: Levers) -> None:
    if levers.channels_last:
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    if levers.compile_unet:
        pipeline.unet.compile()
    if levers.no_vae_upcast and hasattr(pipeline.vae.config, "force_upcast"):
        pipeline.vae.register_to_config(force_upcast=False)


class BenchEngine(Engine):
    """Our Engine, keeping the pipeline it loads (to report on) and applying ``levers`` to it
    where a freshly loaded pipeline is made (``None``: the Engine as shipped)."""

    def __init__(
        self, models_dir: Path, device: str, dtype: torch.dtype, levers: Levers | None
    ) -> None:
        super().__init__(models_dir, device=device, dtype=dtype)
        self.levers = levers
        self.pipeline: Any = None

    def _load_pipeline(self, entry: Any) -> Any:
        pipeline = super()._load_pipeline(entry)
        # The Engine moves the pipeline to the device after this; the memory format sticks.
        if self.levers is not None:
            apply_levers(pipeline, self.levers)
        self.pipeline = pipeline
        return pipeline


@dataclass
class Renderer:
    """One variant: ``render(count, on_step)`` runs a txt2img call and returns when it is done."""

    attention: str
    render: Callable[[int, Callable[[], None]], None]


def plain_renderer(
    folder: Path, device: str, dtype: torch.dtype, size: int, steps: int
) -> Renderer:
    # Diffusers' loaders are untyped; what comes back is a Stable Diffusion (XL) pipeline.
    loader: Any = diffusers.DiffusionPipeline
    pipeline = loader.from_pretrained(folder, dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)

    def render(count: int, on_step: Callable[[], None]) -> None:
        def step_end(_pipe: Any, _index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step()
            return tensors

        pipeline(
            PROMPT,
            num_images_per_prompt=count,
            num_inference_steps=steps,
            height=size,
            width=size,
            callback_on_step_end=step_end,
        )

    return Renderer(attention_processor(pipeline.unet), render)


def engine_renderer(engine: BenchEngine, size: int, steps: int) -> Renderer:
    def render(count: int, on_step: Callable[[], None]) -> None:
        def progress(_progress: StepProgress) -> None:
            on_step()

        request = RenderRequest(
            PROMPT, seed=1, steps=steps, width=size, height=size, count=count, model=MODEL_NAME
        )
        engine.render(request, progress)

    render(1, lambda: None)  # loads the model, so its attention processor can be read
    return Renderer(attention_processor(engine.pipeline.unet), render)


def attention_processor(unet: Any) -> str:
    names = {type(processor).__name__ for processor in unet.attn_processors.values()}
    return ",".join(sorted(names))


def load_variant(
    variant: Variant,
    folder: Path,
    device: str,
    dtype: torch.dtype,
    size: int,
    steps: int,
    levers: Levers,
) -> Renderer:
    if variant == "plain":
        return plain_renderer(folder, device, dtype, size, steps)
    variant_levers = levers if variant == "easel_tuned" else None
    return engine_renderer(BenchEngine(folder.parent, device, dtype, variant_levers), size, steps)


def measure(renderer: Renderer, device: str, runs: int) -> dict[str, Any]:
    """Median it/s of a one-picture render and median seconds of a 2x2 grid, after warm-up."""
    step_ends: list[float] = []

    def on_step() -> None:
        synchronize(device)
        step_ends.append(time.perf_counter())

    rates: list[float] = []
    grid_seconds: list[float] = []
    for warm_up in (1, GRID_COUNT):  # each batch shape once (torch.compile specialises)
        renderer.render(warm_up, lambda: None)
    for _ in range(runs):
        step_ends.clear()
        renderer.render(1, on_step)
        # First to last step end: the loop's pace, without prompt encoding and VAE decode.
        rates.append((len(step_ends) - 1) / (step_ends[-1] - step_ends[0]))
        synchronize(device)
        started = time.perf_counter()
        renderer.render(GRID_COUNT, lambda: None)
        synchronize(device)
        grid_seconds.append(time.perf_counter() - started)
    return {
        "attention": renderer.attention,
        "it_per_s": round(statistics.median(rates), 3),
        "grid_2x2_s": round(statistics.median(grid_seconds), 3),
    }


def benchmark_family(
    family: Family,
    models_dir: Path,
    device: str,
    dtype: torch.dtype,
    size: int,
    steps: int,
    runs: int,
    levers: Levers,
    tiny: bool,
) -> dict[str, Any]:
    folder, build_seconds = write_model(models_dir / family, family, device, dtype, tiny)
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        # One variant in memory at a time: nothing keeps the renderer once it is measured.
        results[variant] = measure(
            load_variant(variant, folder, device, dtype, size, steps, levers), device, runs
        )
        release_memory(device)
    plain = results["plain"]
    ratios = {
        f"{variant}_vs_plain": {
            "it_per_s": round(results[variant]["it_per_s"] / plain["it_per_s"], 3),
            "grid_speedup": round(plain["grid_2x2_s"] / results[variant]["grid_2x2_s"], 3),
        }
        for variant in VARIANTS[1:]
    }
    return {
        "family": family,
        "model": "tiny" if tiny else "full-size random weights",
        "size": f"{size}x{size}",
        "steps": steps,
        "build_and_write_s": round(build_seconds, 2),
        **results,
        "ratios": ratios,
        "goals": goals(family, size, steps, results, device),
    }


def goals(
    family: Family, size: int, steps: int, results: dict[str, Any], device: str
) -> dict[str, Any]:
    """The recorded goals, where this run's settings are the ones they are stated for."""
    if family == "sd15" and size == 512:
        ratio = results["easel_tuned"]["it_per_s"] / results["plain"]["it_per_s"]
        goal = SD15_IT_S_GOAL_RATIO
        return {"tuned_it_per_s_ratio_goal": goal, "met": ratio >= goal}
    if family == "sdxl" and size == 1024 and steps == 30 and device.startswith("cuda"):
        grid = results["easel_tuned"]["grid_2x2_s"]
        return {"tuned_grid_2x2_s_goal": SDXL_GRID_GOAL_S, "met": grid <= SDXL_GRID_GOAL_S}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", nargs="+", choices=("sd15", "sdxl"), default=["sd15", "sdxl"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, help="square side in pixels (default: native)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the tuned UNet")
    parser.add_argument(
        "--no-vae-upcast",
        action="store_true",
        help="tuned variant decodes in fp16 (what an fp16-fixed VAE allows)",
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (smoke runs)")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (it/s needs two step ends), got {args.steps}")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.size is not None and (args.size < 64 or args.size % 8):
        parser.error(f"--size must be a multiple of 8, at least 64, got {args.size}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu for a smoke run)")
    # Half precision on GPUs, as the Engine picks; CPUs have no fast fp16 kernels.
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    levers = Levers(compile_unet=args.compile, no_vae_upcast=args.no_vae_upcast)
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "levers": vars(levers),
        "families": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.family:
            size = args.size or NATIVE_SIZES[family]
            report["families"].append(
                benchmark_family(
                    family,
                    Path(scratch),
                    args.device,
                    dtype,
                    size,
                    args.steps,
                    args.runs,
                    levers,
                    args.tiny,
                )
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
