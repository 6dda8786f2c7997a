"""The render engines the bot, ``easel worker`` and the render commands build from the settings:
no discord here, so a worker machine renders without loading it."""

from __future__ import annotations

from bot.settings import Settings
from inference.worker import EngineFactory, RenderEngine

# With EASEL_MODEL_CACHE_GB set, at most this many models stay loaded on a device.
MAX_CACHED_MODELS = 8
# A job's progress message is edited at most this often (cogs/results/progress.py); the engine
# makes a preview for each edit, no more often.
PROGRESS_EDIT_INTERVAL_S = 2.0


def engine_factory_for(settings: Settings) -> EngineFactory:
    """Real engines: one per device, built on that device's worker thread."""

    def build_engine(device: str) -> RenderEngine:
        from inference.compile import Compiler
        from inference.cuda_graphs import CudaGraphRecorder
        from inference.engine import Engine

        mode = None if settings.compile_mode == "default" else settings.compile_mode
        compiler = (
            Compiler(settings.compile_cache_dir, mode=mode) if settings.compiles_models else None
        )
        return Engine(
            settings.models_dir,
            device=device,
            default_model=settings.default_model,
            default_upscaler=settings.default_upscaler,
            allow_pickle=settings.allow_pickle,
            wildcards_dir=settings.existing_wildcards_dir,
            cpu_offload=settings.cpu_offload,
            max_loaded_models=MAX_CACHED_MODELS if settings.model_cache_gb else 1,
            memory_budget_bytes=int(settings.model_cache_gb * 2**30) or None,
            preview_interval_s=PROGRESS_EDIT_INTERVAL_S,
            limits=settings.render_limits,
            compiler=compiler,
            cuda_graphs=CudaGraphRecorder if settings.records_cuda_graphs(device) else None,
            quantize=settings.quantize,
            hashes_file=settings.model_hashes_file,
        )

    return build_engine
