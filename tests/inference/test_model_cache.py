from __future__ import annotations

import dataclasses
import gc
import weakref
from pathlib import Path

import pytest

from inference.engine import Engine
from inference.tiny import write_tiny_model, write_tiny_vae
from inference.types import RenderRequest

REQUEST = RenderRequest("a cat", seed=1, steps=1, width=64, height=64)


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("three")
    for index, name in enumerate(("a", "b", "c")):
        write_tiny_model(folder / name, seed=index)
    write_tiny_vae(folder / "vae" / "other.safetensors", seed=1)
    return folder


def render_with(engine: Engine, *names: str) -> None:
    for name in names:
        engine.render(dataclasses.replace(REQUEST, model=name))


def test_least_recently_used_model_is_dropped(three_models: Path) -> None:
    engine = Engine(three_models, max_loaded_models=2)
    render_with(engine, "a", "b", "a", "c")
    assert list(engine.models.loaded) == ["a", "c"]
    engine.models.clear()
    assert list(engine.models.loaded) == []


def test_memory_budget_bounds_the_cache(three_models: Path) -> None:
    probe = Engine(three_models)
    render_with(probe, "a")
    one_model = probe.models.loaded["a"].weight_bytes
    assert one_model > 1_000_000  # the tiny model's weights, in float32
    engine = Engine(three_models, max_loaded_models=3, memory_budget_bytes=int(one_model * 2.5))
    render_with(engine, "a", "b", "c")
    assert list(engine.models.loaded) == ["b", "c"]
    # A model larger than the whole budget still loads: the newest one always stays.
    tight = Engine(three_models, max_loaded_models=3, memory_budget_bytes=1)
    render_with(tight, "a", "b")
    assert list(tight.models.loaded) == ["b"]


def test_an_evicted_model_is_freed_with_its_vae_override(three_models: Path) -> None:
    engine = Engine(three_models, max_loaded_models=1)
    engine.render(dataclasses.replace(REQUEST, model="a", options={"vae": "other"}))
    evicted = weakref.ref(engine.models.loaded["a"])
    render_with(engine, "b")
    gc.collect()
    assert evicted() is None  # not held by the override it no longer uses
