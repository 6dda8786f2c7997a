"""EASEL_CUDA_GRAPHS: a replayed UNet renders what the eager one renders, on every path.

CUDA graphs cannot be recorded on the CPU, so the stand-ins of ``tests.support.graphs`` keep
their contract (see there): ``FreezingRecorder`` replays only the aten operators recorded,
as a graph does, so a setting the dispatcher failed to notice shows as another picture. The
real recorder runs in ``benchmarks/cuda_paths.py --device cuda``, on every engine path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from benchmarks.cuda_paths import NO_REPLAYS
from benchmarks.cuda_paths import run as run_paths
from bot.settings import load_settings
from inference import cuda_graphs
from inference.cuda_graphs import GraphedForward, RecordingBroke, empty_device_cache, graphed_unet
from inference.engine import Engine
from inference.model_cache import ModelCache
from inference.registry import ModelRegistry
from inference.tiny import (
    build_tiny_pipeline,
    write_tiny_ip_adapter,
    write_tiny_lora,
    write_tiny_model,
)
from inference.types import RenderRequest
from tests.support.graphs import FailingRecorder, FreezingRecorder, RerunRecorder, StaleRecorder

BASE = RenderRequest("a cat", negative_prompt="blurry", width=64, height=64, steps=4, seed=5)
# The tiny UNet's native latent side (64 pixels).
TINY_SIDE = 8


@pytest.fixture(scope="module")
def graph_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("graph-models")
    write_tiny_ip_adapter(write_tiny_model(directory / "tiny", seed=0))
    write_tiny_lora(directory / "lora" / "ink.safetensors", seed=1)
    return directory


@pytest.fixture(scope="module")
def eager_engine(graph_models: Path) -> Engine:
    return Engine(graph_models)


@pytest.fixture(scope="module")
def graphed_engine(graph_models: Path) -> Engine:
    return Engine(graph_models, cuda_graphs=FreezingRecorder)


EagerPictures = Callable[..., list[bytes]]


@pytest.fixture(scope="module")
def eager(eager_engine: Engine) -> EagerPictures:
    """``eager(**changes)``: the eager engine's pictures of ``BASE`` with ``changes``, the
    reference a graphed render must equal. Each is rendered once per module: the eager
    engine renders the same pictures every time, and most tests compare the plain render."""
    rendered: dict[str, list[bytes]] = {}

    def pictures(**changes: Any) -> list[bytes]:
        key = repr(sorted(changes.items()))
        if key not in rendered:
            rendered[key] = _render(eager_engine, **changes)
        return rendered[key]

    return pictures


@pytest.fixture(autouse=True)
def recordings_unbroken() -> Iterator[None]:
    """A broken recording is process-wide; each test starts and ends without one."""
    cuda_graphs._recordings_broke.clear()
    yield
    cuda_graphs._recordings_broke.clear()


def _render(engine: Engine, **changes: Any) -> list[bytes]:
    return [image.png for image in engine.render(dataclasses.replace(BASE, **changes))]


def _unet(engine: Engine) -> GraphedForward:
    unet = graphed_unet(engine.models.loaded["tiny"].pipeline)
    assert unet is not None
    return unet


@pytest.mark.parametrize(
    "changes",
    [
        {},
        # A multistep sampler keeps earlier UNet outputs: a replay must not overwrite them.
        {"sampler": "DPM++ 2M", "schedule_type": "Karras"},
        # The conditioning changes halfway: new values in the same buffers.
        {"prompt": "a [cat:dog:0.5]", "sampler": "Euler"},
        {"count": 2, "sampler": "DPM++ SDE"},
        # Two 75-token chunks: another key (prompt length), recorded on its own.
        {"prompt": "a cat AND " + "a dog, " * 40},
        # Seamless tiling makes the convolutions' padding circular: frozen into a graph.
        {"options": {"tile": True}},
        # Fast mode's cache gives the deep blocks a forward of their own.
        {"fast": True},
    ],
    ids=["euler-a", "dpm2m", "prompt-editing", "batch-sde", "long-and", "tile", "fast"],
)
def test_replayed_render_equals_the_eager_one(
    graphed_engine: Engine, eager: EagerPictures, changes: dict[str, Any]
) -> None:
    """Each case after a plain render (its graph recorded) and before another: what a case
    changes must not reach the plain renders' graph, nor the graph's state the case."""
    plain = eager()
    _render(graphed_engine)
    assert _render(graphed_engine, **changes) == eager(**changes)
    unet = _unet(graphed_engine)
    calls, replays = unet.calls, unet.replays
    assert _render(graphed_engine) == plain
    # Every UNet call of the plain render after it was a replay.
    assert unet.replays - replays == unet.calls - calls == BASE.steps


def test_a_shape_is_recorded_at_its_second_call_and_kept_after_its_third(
    graph_models: Path, eager: EagerPictures
) -> None:
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    assert _render(engine) == eager()
    unet = _unet(engine)
    # Calls 1-3 ran eager (seen, recorded, checked against the replay), call 4 replayed.
    assert (unet.calls, unet.recordings, unet.graphs, unet.replays) == (4, 1, 1, 1)


def test_the_warm_start_records_the_native_shape_before_the_first_job(
    graph_models: Path, eager: EagerPictures
) -> None:
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    engine.warm_up()
    unet = _unet(engine)
    assert (unet.graphs, unet.replays) == (2, 0)  # one picture's rows, and a 2x2 grid's
    assert _render(engine) == eager()
    assert unet.replays == BASE.steps  # the first job replays from its first step
    assert _render(engine, count=4) == eager(count=4)
    assert unet.replays == 2 * BASE.steps  # so does the first grid


def test_lora_and_image_prompt_run_eager_then_replays_resume(
    graphed_engine: Engine, eager: EagerPictures, tmp_path: Path
) -> None:
    """A LoRA's adapters and an IP-Adapter's processors are not in the graph: those jobs run
    eager (equal to the eager engine), and the next plain job replays again, unrecorded."""
    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(picture)
    _render(graphed_engine)
    unet = _unet(graphed_engine)
    for changes in (
        {"prompt": "a cat <lora:ink:0.8>"},
        {"options": {"ipadapter": {"images": [str(picture)]}}},
    ):
        replays, recordings = unet.replays, unet.recordings
        assert _render(graphed_engine, **changes) == eager(**changes), changes
        assert (unet.replays, unet.recordings) == (replays, recordings), changes
    calls, replays, recordings = unet.calls, unet.replays, unet.recordings
    assert _render(graphed_engine) == eager()
    assert unet.replays - replays == unet.calls - calls == BASE.steps
    assert unet.recordings == recordings


def test_only_shapes_near_the_native_size_are_recorded(
    graph_models: Path, eager: EagerPictures
) -> None:
    """A graph keeps its activations' memory: a wider picture of about the native pixel
    count is recorded, a hires pass's larger latents are not."""
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    wide = {"width": 80, "height": 64}  # 10x8 latents: 1.25 times the native 8x8
    assert _render(engine, **wide) == eager(**wide)
    assert _unet(engine).graphs == 1
    hires = {"options": {"hires_scale": 2.0, "hires_steps": 3, "hires_denoising": 0.5}}
    assert _render(engine, **hires) == eager(**hires)
    # The first pass (native size) recorded its key; the 16x16 second pass ran eager.
    assert _unet(engine).graphs == 2


def test_moved_weights_drop_the_graphs(graph_models: Path, eager: EagerPictures) -> None:
    """A graph reads the addresses it was recorded with: weights in new storage (a move to
    another device) drop every graph, and the next calls record again."""
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    _render(engine)
    unet = _unet(engine)
    assert (unet.graphs, unet.recordings) == (1, 1)
    real = engine.models.loaded["tiny"].pipeline.unet
    with torch.no_grad():
        for parameter in real.parameters():
            parameter.data = parameter.data.clone()
    assert _render(engine) == eager()
    assert (unet.graphs, unet.recordings) == (1, 2)


@pytest.mark.parametrize(
    "make_recorder",
    [
        lambda: FailingRecorder(RuntimeError("the UNet is not on this recorder's device")),
        StaleRecorder,
    ],
    ids=["recording-fails", "replay-differs"],
)
def test_a_key_that_cannot_be_replayed_stays_eager(
    graph_models: Path, eager: EagerPictures, make_recorder: Callable[[], RerunRecorder]
) -> None:
    recorder = make_recorder()
    engine = Engine(graph_models, cuda_graphs=lambda device: recorder)
    for _ in range(2):
        assert _render(engine) == eager()
    unet = _unet(engine)
    assert (unet.graphs, unet.replays) == (0, 0)
    assert recorder.records == 1  # refused for good: not tried again on the next render


def test_out_of_memory_before_recording_leaves_the_unet_eager(
    graph_models: Path, eager: EagerPictures
) -> None:
    recorder = FailingRecorder(torch.OutOfMemoryError("CUDA out of memory"))
    engine = Engine(graph_models, cuda_graphs=lambda device: recorder)
    assert _render(engine) == eager()
    assert _render(engine, count=2) == eager(count=2)  # another key
    unet = _unet(engine)
    assert (unet.may_record, unet.graphs, recorder.records) == (False, 0, 1)


def test_a_recording_that_breaks_stops_recordings_and_cache_emptying(
    graph_models: Path, eager: EagerPictures, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure inside a capture leaves torch's allocator mid-capture: emptying a device
    cache would then fail, so it is skipped, and no UNet records again; renders go on."""
    emptied: list[None] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(None))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    cuda_graphs._guard_cache_emptying()  # as a CUDA recorder does when it is made
    empty_device_cache("cuda:0")
    assert len(emptied) == 1
    broken = FailingRecorder(RecordingBroke("operation not permitted when stream is capturing"))
    engine = Engine(graph_models, cuda_graphs=lambda device: broken)
    assert _render(engine) == eager()
    empty_device_cache("cuda:0")
    assert len(emptied) == 1
    other = FreezingRecorder()
    another = Engine(graph_models, cuda_graphs=lambda device: other)
    for _ in range(2):
        assert _render(another) == eager()
    assert (broken.records, other.records, _unet(another).replays) == (1, 0, 0)


def test_out_of_memory_in_a_render_drops_the_graphs_and_renders_again(
    graph_models: Path, eager: EagerPictures, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graphs' memory may be what a VAE decode lacks: the render runs once more without
    them, and the UNet records no more; without graphs held, the error stands."""
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    _render(engine)
    unet = _unet(engine)
    assert unet.graphs == 1
    run = Engine._run
    failures = iter([torch.OutOfMemoryError("CUDA out of memory")])

    def short_once(self: Engine, *args: Any, **kwargs: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_run", short_once)
    assert _render(engine) == eager()
    assert (unet.graphs, unet.may_record) == (0, False)
    failures = iter([torch.OutOfMemoryError("CUDA out of memory")])
    with pytest.raises(torch.OutOfMemoryError):
        _render(engine)


def test_out_of_memory_without_the_graphs_too_lets_them_record_again(
    graph_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short of memory with the graphs dropped as well: they were not the cause, so the UNet
    may record again; the error stands."""
    engine = Engine(graph_models, cuda_graphs=FreezingRecorder)
    _render(engine)
    unet = _unet(engine)

    def always_short(self: Engine, *args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Engine, "_run", always_short)
    with pytest.raises(torch.OutOfMemoryError):
        _render(engine)
    assert (unet.graphs, unet.may_record) == (0, True)


def test_quantized_and_offloaded_models_are_not_graphed(graph_models: Path) -> None:
    engine = Engine(graph_models, quantize="int8", cuda_graphs=FreezingRecorder)
    _render(engine)
    assert graphed_unet(engine.models.loaded["tiny"].pipeline) is None
    offloaded = ModelCache(
        ModelRegistry(graph_models), "cuda", lambda e: None, cpu_offload=True,
        graph_recorders=FreezingRecorder,
    )  # fmt: skip
    assert offloaded.graph_recorders is None


UNetCall = Callable[[torch.Tensor], torch.Tensor]


@pytest.fixture
def tiny_unet() -> tuple[torch.nn.Module, GraphedForward, UNetCall]:
    """A tiny UNet replayed from (stand-in) graphs, and a call of it on a given sample."""
    unet = build_tiny_pipeline().unet.eval()
    unet.forward = graphed = GraphedForward(
        unet, FreezingRecorder(), max_rows=8, max_area=TINY_SIDE * TINY_SIDE
    )
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=_seeded())

    def call(sample: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            result: torch.Tensor = unet(sample, torch.tensor(500), states, return_dict=False)[0]
        return result

    return unet, graphed, call


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, TINY_SIDE, TINY_SIDE, generator=_seeded(seed))


def test_replays_hand_out_outputs_of_their_own(
    tiny_unet: tuple[torch.nn.Module, GraphedForward, UNetCall],
) -> None:
    """A sampler may keep a UNet output across steps: the next replay, which rewrites the
    graph's own outputs, must not change it."""
    _, graphed, call = tiny_unet
    for seed in (1, 2, 3):  # seen, recorded, checked
        call(_sample(seed))
    kept = call(_sample(4))
    expected = kept.clone()
    assert graphed.replays == 1
    assert not torch.equal(call(_sample(5)), expected)
    assert graphed.replays == 2
    assert torch.equal(kept, expected)


def test_hooks_and_swapped_processors_run_eager(
    tiny_unet: tuple[torch.nn.Module, GraphedForward, UNetCall],
) -> None:
    """What a hook, other attention processors (an IP-Adapter's) or a block's own forward
    add is not in the graph: such calls run the eager UNet, and replays resume after."""
    unet, graphed, call = tiny_unet
    sample = _sample(1)
    expected = call(sample)
    for _ in range(2):
        assert torch.equal(call(sample), expected)
    assert torch.equal(call(sample), expected) and graphed.replays == 1
    handle = unet.register_forward_hook(lambda module, args, output: (output[0] * 2,))
    assert torch.equal(call(sample), expected * 2) and graphed.replays == 1
    handle.remove()
    original = dict(unet.attn_processors)
    unet.set_attn_processor(AttnProcessor2_0())
    assert torch.equal(call(sample), expected) and graphed.replays == 1
    unet.set_attn_processor(dict(original))
    assert torch.equal(call(sample), expected) and graphed.replays == 2
    # Fast mode's cache gives blocks forwards of their own (here: one that doubles).
    block = unet.down_blocks[0]
    plain_forward = block.forward

    def doubled(*args: Any, **kwargs: Any) -> Any:
        hidden, skips = plain_forward(*args, **kwargs)
        return hidden * 2, skips

    block.forward = doubled
    assert not torch.equal(call(sample), expected) and graphed.replays == 2
    del block.forward
    assert torch.equal(call(sample), expected) and graphed.replays == 3


def test_the_least_recently_replayed_graph_goes_first(
    tiny_unet: tuple[torch.nn.Module, GraphedForward, UNetCall],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cuda_graphs, "MAX_GRAPHS", 2)
    _, graphed, call = tiny_unet
    shapes = [(2, 4, 8, 8), (2, 4, 4, 8), (2, 4, 8, 4)]
    for shape in shapes[:2]:
        for _ in range(4):
            call(torch.randn(shape))
    call(torch.randn(shapes[0]))  # the first shape is now the most recently replayed
    for _ in range(3):
        call(torch.randn(shapes[2]))
    replays = graphed.replays
    call(torch.randn(shapes[0]))
    call(torch.randn(shapes[2]))
    call(torch.randn(shapes[1]))  # dropped: eager
    assert (graphed.graphs, graphed.replays - replays) == (2, 2)


def test_an_expanded_input_is_copied_into_a_buffer_of_its_own(
    tiny_unet: tuple[torch.nn.Module, GraphedForward, UNetCall],
) -> None:
    """A broadcast sample (stride 0) cannot be written into; its buffer is a dense copy."""
    _, graphed, call = tiny_unet
    row = torch.randn(1, 4, TINY_SIDE, TINY_SIDE, generator=_seeded(1))
    expected = call(row.expand(2, -1, -1, -1).clone())
    for _ in range(4):  # seen, recorded, checked, replayed
        assert torch.equal(call(row.expand(2, -1, -1, -1)), expected)
    assert graphed.replays == 1


def test_settings_offer_graphs_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EASEL_CUDA_GRAPHS", raising=False)
    settings = load_settings(env_file=None)
    devices = ("cuda", "cuda:1", "cpu", "mps")
    assert [settings.records_cuda_graphs(d) for d in devices] == [True, True, False, False]
    monkeypatch.setenv("EASEL_CUDA_GRAPHS", "false")
    assert not load_settings(env_file=None).records_cuda_graphs("cuda")


def test_every_engine_path_renders_the_same_replayed(tmp_path: Path) -> None:
    """The GPU session's pass over every engine path (SDXL's extra conditioning, the
    inpainting UNet, hires, ControlNet, seamless tiling, creative upscale's tiles, each
    sampler), here with the stand-in: each path's replayed pictures equal the eager
    engine's, with replays on every path that calls a UNet without a LoRA."""
    report = run_paths("cpu", tmp_path, FreezingRecorder)
    assert report["failed"] == []
    for name, path in report["paths"].items():
        assert path["max_graph_difference"] == 0, name
        assert (path["graph_replays"] > 0) == (name not in NO_REPLAYS), name


@dataclasses.dataclass
class _FakeStream:
    name: str
    events: list[str]

    def wait_stream(self, other: _FakeStream) -> None:
        self.events.append(f"{self.name} waits for {other.name}")


def _memory_lock_held() -> bool:
    """Whether some thread holds ``DEVICE_MEMORY_LOCK`` (asked from another thread: it is
    re-entrant)."""
    free: list[bool] = []

    def try_it() -> None:
        acquired = cuda_graphs.DEVICE_MEMORY_LOCK.acquire(blocking=False)
        free.append(acquired)
        if acquired:
            cuda_graphs.DEVICE_MEMORY_LOCK.release()

    thread = threading.Thread(target=try_it)
    thread.start()
    thread.join()
    return not free[0]


class _FakeCuda:
    """torch.cuda's streams, graphs and devices as ``CudaGraphRecorder`` calls them, noting
    which stream each call of the recorded function ran on (no CUDA here). Like torch's,
    the fake recording does not put the ambient stream back when ending the capture fails."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
        self.events: list[str] = []
        self.ambient = _FakeStream("ambient", self.events)
        self.recording = _FakeStream("recording", self.events)
        self.current = self.ambient
        self.fails = fails
        self.emptied = 0
        fake = self

        class Graph:
            def replay(self) -> None:
                fake.events.append("replay")

        @contextlib.contextmanager
        def stream(chosen: _FakeStream) -> Iterator[None]:
            before, fake.current = fake.current, chosen
            try:
                yield
            finally:  # as torch's StreamContext.__exit__ does
                fake.current = before

        @contextlib.contextmanager
        def graph(cuda_graph: Graph, **options: Any) -> Iterator[None]:
            assert options["stream"] == fake.recording
            assert options["capture_error_mode"] == "thread_local"
            fake.events.append(f"capture, lock held: {_memory_lock_held()}")
            fake.current = fake.recording
            yield
            if fake.fails == "capture":
                raise RuntimeError("operation not permitted when stream is capturing")
            if fake.fails == "instantiating":
                raise RuntimeError("CUDA error: out of memory")
            fake.current = fake.ambient

        def empty_cache() -> None:
            fake.emptied += 1

        for name, value in {
            "device": lambda device: contextlib.nullcontext(),
            "graph_pool_handle": lambda: "pool",
            "Stream": lambda device: fake.recording,
            "current_stream": lambda device=None: fake.current,
            "stream": stream,
            "graph": graph,
            "CUDAGraph": Graph,
            "empty_cache": empty_cache,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(
            torch._C,
            "_cuda_clearCublasWorkspaces",
            lambda: fake.events.append("cuBLAS workspaces cleared"),
            raising=False,
        )

    def run(self) -> torch.Tensor:
        self.events.append(f"run on {self.current.name}")
        if self.fails == "run" and self.current is self.recording and "capture" in str(self.events):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return torch.zeros(1)


@pytest.mark.parametrize("fails", ["nothing", "run", "instantiating", "capture"])
def test_the_cuda_recorder_warms_up_then_captures_under_the_lock(
    monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """One call on the recording stream before the capture (lazy per-stream set-up); the
    capture under the process-wide memory lock, with cuBLAS workspaces of its own; the
    ambient stream back afterwards. What the recorded call raises comes through as it is;
    so is running out of memory ending it; any other failure of the capture itself is a
    ``RecordingBroke`` that stops every recording and every cache emptying, diffusers' own
    included (it calls ``torch.cuda.empty_cache``)."""
    fake = _FakeCuda(monkeypatch, fails)
    recorder = cuda_graphs.CudaGraphRecorder(torch.device("cuda:0"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    torch.cuda.empty_cache()
    assert fake.emptied == 1
    if fails == "nothing":
        replay, outputs = recorder.record(fake.run)
        replay()
        assert torch.equal(outputs, torch.zeros(1))
    else:
        error = RecordingBroke if fails == "capture" else torch.OutOfMemoryError
        with pytest.raises(error):
            recorder.record(fake.run)
    assert fake.events[:6] == [
        "recording waits for ambient",
        "run on recording",
        "ambient waits for recording",
        "cuBLAS workspaces cleared",
        "capture, lock held: True",
        "run on recording",
    ]
    assert (
        fake.events[6:]
        == {
            "nothing": ["cuBLAS workspaces cleared", "replay"],
            "run": ["cuBLAS workspaces cleared"],
            "instantiating": [],
            "capture": [],
        }[fails]
    )
    assert fake.current == fake.ambient
    assert not _memory_lock_held()
    torch.cuda.empty_cache()
    assert fake.emptied == (1 if fails == "capture" else 2)
