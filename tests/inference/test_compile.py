"""EASEL_COMPILE: the compiled UNet and VAE decoder render what the eager ones render.

One engine is compiled for the whole module (a CPU inductor compile of the tiny model takes
tens of seconds); its first render runs eager while the background thread compiles.
"""

from __future__ import annotations

import dataclasses
import os
import re
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.settings import SettingsError, load_settings
from inference.compile import Bucket, CompiledModule, Compiler, call_key, compiled_parts
from inference.engine import Engine
from inference.tiny import write_tiny_lora, write_tiny_model, write_tiny_vae
from inference.types import RenderRequest

PixelReader = Callable[[bytes], np.ndarray]
# The tiny model's native size: latents of 8x8.
BASE = RenderRequest("a cat", width=64, height=64, steps=3, seed=5)
TOLERANCE = 2  # of 255
COMPILE_TIMEOUT_S = 600
# The first test to use the compiled engine waits for its compile (cold cache: minutes).
pytestmark = pytest.mark.timeout(COMPILE_TIMEOUT_S + 120)


@pytest.fixture(scope="module")
def compile_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("compile-models")
    write_tiny_model(directory / "tiny", seed=0)
    write_tiny_lora(directory / "lora" / "ink.safetensors", seed=1)
    write_tiny_vae(directory / "vae" / "other.safetensors", seed=1)
    return directory


@pytest.fixture(scope="module")
def eager_engine(compile_models: Path) -> Engine:
    return Engine(compile_models)


@pytest.fixture(scope="module")
def compiled_engine(
    compile_models: Path,
) -> Iterator[Engine]:
    """A compiled engine after its first (eager) render, once the compile thread is done.
    Only the shapes seen are warmed, not their other batch sizes: two compiles, not eight.
    Inductor's artefacts stay in the user's cache folder, as in EASEL_DATA_DIR between restarts
    (a fresh checkout has no pytest cache): a cold compile takes a minute or more on a busy
    2-core machine, a warm one seconds. Inductor keys them by graph and torch version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "easel-tests"
    cache.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # put back afterwards
        engine = Engine(compile_models, compiler=Compiler(cache, batch_variants=False))
        engine.render(BASE)
        assert engine.compiler is not None
        assert engine.compiler.wait_idle(COMPILE_TIMEOUT_S)
        yield engine


def _parts(engine: Engine) -> list[CompiledModule]:
    return compiled_parts(engine.models.loaded["tiny"].pipeline)


def _compiled_calls(engine: Engine) -> list[int]:
    return [part.compiled_calls for part in _parts(engine)]


def _render(engine: Engine, **changes: object) -> bytes:
    [image] = engine.render(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]
    return image.png


def _graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_compiled_render_equals_the_eager_one(
    compiled_engine: Engine, eager_engine: Engine, pixels: PixelReader
) -> None:
    unet, decoder = _parts(compiled_engine)
    assert len(unet.ready) == len(decoder.ready) == 1  # the shapes of the first render
    graphs = _graphs_compiled()
    compiled = _render(compiled_engine)
    # Three steps of the UNet and one decode ran compiled, with no compile on this thread.
    assert [unet.compiled_calls, decoder.compiled_calls] == [3, 1]
    assert _graphs_compiled() == graphs
    difference = np.abs(pixels(compiled) - pixels(_render(eager_engine)))
    assert difference.max() <= TOLERANCE


def test_size_outside_the_buckets_runs_eager_without_compiling(
    compiled_engine: Engine, eager_engine: Engine, pixels: PixelReader
) -> None:
    calls, graphs = _compiled_calls(compiled_engine), _graphs_compiled()
    other = _render(compiled_engine, width=96, height=80)
    assert compiled_engine.compiler is not None
    assert compiled_engine.compiler.wait_idle(0)  # nothing was queued for it
    assert (_compiled_calls(compiled_engine), _graphs_compiled()) == (calls, graphs)
    assert np.array_equal(pixels(other), pixels(_render(eager_engine, width=96, height=80)))


def test_lora_and_vae_override_after_compile(
    compiled_engine: Engine, eager_engine: Engine, pixels: PixelReader
) -> None:
    """A LoRA job runs the eager UNet (its adapters are not in the compiled graph) and an
    override VAE its own decoder; the next plain job is compiled again."""
    for changes in ({"prompt": "a cat <lora:ink:0.8>"}, {"options": {"vae": "other"}}):
        [unet_calls, decoder_calls] = _compiled_calls(compiled_engine)
        compiled = _render(compiled_engine, **changes)
        eager = _render(eager_engine, **changes)
        assert np.abs(pixels(compiled) - pixels(eager)).max() <= TOLERANCE, changes
        assert np.abs(pixels(eager) - pixels(_render(eager_engine))).max() > 10  # it acted
        lora = "prompt" in changes
        assert _compiled_calls(compiled_engine) == [
            unet_calls if lora else unet_calls + 3,
            decoder_calls + 1 if lora else decoder_calls,
        ]
    before = _compiled_calls(compiled_engine)
    plain = _render(compiled_engine)
    assert _compiled_calls(compiled_engine) == [before[0] + 3, before[1] + 1]
    assert np.abs(pixels(plain) - pixels(_render(eager_engine))).max() <= TOLERANCE


def test_tiling_after_compile_runs_eager(
    compiled_engine: Engine, eager_engine: Engine, pixels: PixelReader
) -> None:
    """Seamless tiling pads the eager tree's convolutions circularly, not the compiled
    twin's: a tiled job at a compiled shape runs eager, and tiles."""
    before = _compiled_calls(compiled_engine)
    plain = _render(compiled_engine)
    calls = _compiled_calls(compiled_engine)
    assert calls == [before[0] + 3, before[1] + 1]  # the shape runs compiled
    tiled = _render(compiled_engine, options={"tile": True})
    assert _compiled_calls(compiled_engine) == calls
    eager_tiled = pixels(_render(eager_engine, options={"tile": True}))
    assert np.abs(pixels(tiled) - eager_tiled).max() <= TOLERANCE
    assert np.abs(pixels(plain) - eager_tiled).max() > 10  # tiling acted


def test_unloading_frees_the_compiled_twins(compiled_engine: Engine) -> None:
    """Last of the compiled engine's tests: an evicted model's weights, which its compiled
    twins share, leave memory with it (the engine collects the twins' reference cycles)."""
    parts = _parts(compiled_engine)
    twins = [weakref.ref(part.twin) for part in parts]
    weights = weakref.ref(next(parts[0].twin.parameters()))
    del parts
    compiled_engine.models.clear()
    assert [twin() for twin in twins] == [None, None] and weights() is None


@pytest.mark.parametrize(
    ("value", "compiles"),
    [
        ("auto", False),  # on every device: measured slower on an H200 (docs/performance.md)
        (" ON ", True),
        ("off", False),
    ],
)
def test_compile_setting(monkeypatch: pytest.MonkeyPatch, value: str, compiles: bool) -> None:
    monkeypatch.setenv("EASEL_COMPILE", value)
    assert load_settings(None).compiles_models is compiles


def test_compile_setting_default_and_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EASEL_COMPILE", raising=False)
    assert load_settings(None).compile == "auto"
    monkeypatch.setenv("EASEL_COMPILE", "fast")
    expected = "EASEL_COMPILE='fast' is invalid: must be auto, on (or 1, true, yes) or off"
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load_settings(None)


def test_compile_setting_reaches_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.engines import engine_factory_for

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EASEL_COMPILE", "on")
    engine = engine_factory_for(load_settings(None))("cpu")
    assert isinstance(engine, Engine) and isinstance(engine.compiler, Compiler)
    # Compiled artefacts live under the data folder, so a restart finds them.
    assert (tmp_path / "compile-cache").is_dir()
    monkeypatch.setenv("EASEL_COMPILE", "auto")
    uncompiled = engine_factory_for(load_settings(None))("cpu")
    assert isinstance(uncompiled, Engine) and uncompiled.compiler is None


def test_compile_mode_setting_reaches_the_compiler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.engines import engine_factory_for

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EASEL_COMPILE", "on")
    modes = {}
    for value in ("default", " Reduce-Overhead "):
        monkeypatch.setenv("EASEL_COMPILE_MODE", value)
        engine = engine_factory_for(load_settings(None))("cpu")
        assert isinstance(engine, Engine) and engine.compiler is not None
        modes[value] = (engine.compiler.mode, engine.compiler.clones_outputs)
    assert modes == {"default": (None, False), " Reduce-Overhead ": ("reduce-overhead", True)}
    monkeypatch.setenv("EASEL_COMPILE_MODE", "max-autotune")
    with pytest.raises(SettingsError, match="EASEL_COMPILE_MODE='max-autotune' is invalid"):
        load_settings(None)


@pytest.mark.parametrize(("mode", "copied"), [(None, False), ("reduce-overhead", True)])
def test_cuda_graph_outputs_are_copied_before_the_next_replay_overwrites_them(
    tmp_path: Path, mode: str | None, copied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sampler keeps earlier model outputs (DPM++ 2M, LMS, UniPC); a CUDA graph's replay
    # writes its outputs into the same memory each time. (The compiled call is a stand-in:
    # on a CPU inductor records no CUDA graph, and a real compile in this mode costs minutes
    # on a cold cache, so the dispatcher's part is tested here and the mode handed to
    # torch.compile is read from a spy.)
    asked: list[object] = []

    def compile_spy(model: object, **options: object) -> object:
        asked.append(options["mode"])
        return model

    monkeypatch.setattr(torch, "compile", compile_spy)
    module = torch.nn.Conv2d(4, 4, 1)
    compiler = Compiler(tmp_path, batch_variants=False, mode=mode)
    dispatcher = CompiledModule(module, Bucket((8, 8), 2), compiler, module)
    assert asked == [mode]
    graph_memory = torch.ones(1, 4, 8, 8)
    dispatcher.compiled = lambda *args, **kwargs: (graph_memory,)
    sample = torch.zeros(1, 4, 8, 8)
    key = call_key((sample,), {})
    assert key is not None
    dispatcher.ready.add(key)
    (output,) = dispatcher(sample)
    assert dispatcher.compiled_calls == 1
    assert torch.equal(output, graph_memory)
    assert (output.data_ptr() != graph_memory.data_ptr()) is copied
