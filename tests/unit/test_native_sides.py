"""Services.native_sides_of: a model's native side (what an unsized request is priced at) is read
from its configs once, on a thread, and then answered from memory until what it was read
from changes (the event loop asks it before a command's acknowledgement)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import bot.services
from bot.jobs.accounting import UNKNOWN_MODEL_SIDE
from bot.services import Services
from bot.settings import load_settings
from db.database import connect
from inference.memory import native_side
from inference.registry import SCAN_MAX_AGE_NS, ModelRegistry
from tests.support.checkpoint_files import stand_in_checkpoint


def diffusers_model(folder: Path, unet_sample_size: int) -> None:
    """A diffusers folder whose UNet config says its side in latents."""
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    write_config(folder, unet_sample_size)


def write_config(folder: Path, unet_sample_size: int) -> None:
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": unet_sample_size}))


async def side_of(services: Services, model: str | None) -> int:
    """``model``'s native side, asked alone."""
    [side] = await services.native_sides_of([model])
    return side


def settled(*paths: Path) -> None:
    """Date the paths' last change a minute back: long enough for a coarse file-system clock
    (``LISTING_SETTLED_NS``), so a side read from them is kept."""
    long_ago = time.time_ns() - 60_000_000_000
    for path in paths:
        os.utime(path, ns=(long_ago, long_ago))


class Clock:
    """Nanoseconds that move only when told (``NativeSides.clock``)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns

    def past_the_window(self) -> None:
        """Past ``SCAN_MAX_AGE_NS``: a kept side's paths are looked at again."""
        self.now_ns += SCAN_MAX_AGE_NS


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def services(tmp_path: Path, clock: Clock) -> AsyncIterator[Services]:
    settings = load_settings(env_file=None).model_copy(
        update={"models_dir": tmp_path / "models", "data_dir": tmp_path / "data"}
    )
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        # The registry on the same clock: its kept scan ages as the kept sides do.
        registry = ModelRegistry(settings.models_dir, clock=clock)
        services = dataclasses.replace(Services.build(conn, settings), registry=registry)
        services.native_sides.clock = clock
        yield services
    finally:
        await conn.close()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions run on a thread, by name."""
    names: list[str] = []
    to_thread = asyncio.to_thread

    async def recorded(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        names.append(function.__name__)
        return await to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", recorded)
    return names


async def test_a_native_side_is_read_once_until_its_config_changes(
    services: Services, hops: list[str], clock: Clock
) -> None:
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    assert await side_of(services, "sd") == 512
    assert await side_of(services, "sd") == 512  # just written: not kept yet
    settled(sd, sd / "unet" / "config.json")
    assert hops == ["read_native_sides"] * 2
    for _ in range(3):
        assert await side_of(services, "sd") == 512
    assert hops == ["read_native_sides"] * 3
    write_config(sd, unet_sample_size=128)  # in place
    clock.past_the_window()
    assert await side_of(services, "sd") == 1024
    assert hops == ["read_native_sides"] * 4


async def test_a_kept_side_is_taken_without_a_stat_for_a_second_then_looked_at_again(
    services: Services, hops: list[str], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst asks before every acknowledgement: its paths are stat'ed once a second, not
    per command; a change in that second shows once it is over."""
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    settled(sd, sd / "unet" / "config.json")
    assert await side_of(services, "sd") == 512
    stats: list[object] = []
    stat = os.stat

    def counted(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(path)
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    write_config(sd, unet_sample_size=128)  # in place, within the second
    clock.now_ns += SCAN_MAX_AGE_NS - 1
    for _ in range(3):
        assert await side_of(services, "sd") == 512
    assert stats == []
    clock.now_ns += 1
    assert await side_of(services, "sd") == 1024
    assert stats and hops == ["read_native_sides"] * 2


async def test_the_first_installed_is_read_again_when_another_model_comes_first(
    services: Services, hops: list[str], clock: Clock
) -> None:
    models = services.registry.models_dir
    diffusers_model(models / "b", unet_sample_size=64)
    settled(models, models / "b", models / "b" / "unet" / "config.json")
    assert await side_of(services, None) == 512
    assert await side_of(services, None) == 512
    diffusers_model(models / "a", unet_sample_size=128)  # first by name now
    clock.past_the_window()
    assert await side_of(services, None) == 1024
    assert hops == ["read_native_sides"] * 2


async def test_a_comparison_s_models_not_kept_are_read_in_one_hop_and_then_from_memory(
    services: Services, hops: list[str]
) -> None:
    """A /compare asks for each model of its axis before its acknowledgement: one hop for
    those not kept (before: one hop per model), none once they are."""
    models = services.registry.models_dir
    for name, latent_side in (("a", 64), ("b", 128), ("c", 96)):
        diffusers_model(models / name, unet_sample_size=latent_side)
        settled(models / name, models / name / "unet" / "config.json")
    settled(models)
    assert await side_of(services, "b") == 1024
    assert hops == ["read_native_sides"]
    asked = ["a", "b", "c", "on-a-worker"]
    assert await services.native_sides_of(asked) == [512, 1024, 768, UNKNOWN_MODEL_SIDE]
    assert hops == ["read_native_sides"] * 2  # one for the three not kept
    assert await services.native_sides_of(asked) == [512, 1024, 768, UNKNOWN_MODEL_SIDE]
    assert hops == ["read_native_sides"] * 2


async def test_models_not_here_are_priced_at_the_fallback_read_once(
    services: Services, hops: list[str]
) -> None:
    """A broker's workers hold the models: nothing to read here, and no hop after the first."""
    for _ in range(3):
        assert await side_of(services, "on-a-worker") == UNKNOWN_MODEL_SIDE
    assert hops == ["read_native_sides"]


async def test_a_model_copied_into_a_folder_searched_earlier_takes_the_name_and_its_side(
    services: Services, hops: list[str], clock: Clock
) -> None:
    """The checkpoint folders are searched in order: an SDXL "m" written to the models folder
    takes the name from the SD 1.5 "m" in Stable-diffusion/, whose files stay unchanged."""
    models = services.registry.models_dir
    sd15 = models / "Stable-diffusion" / "m"
    diffusers_model(sd15, unet_sample_size=64)
    settled(models, sd15.parent, sd15, sd15 / "unet" / "config.json")
    assert await side_of(services, "m") == 512
    clock.past_the_window()
    assert await side_of(services, "m") == 512  # nothing changed: from memory
    assert hops == ["read_native_sides"]
    diffusers_model(models / "m", unet_sample_size=128)
    clock.past_the_window()
    assert await side_of(services, "m") == 1024
    assert hops == ["read_native_sides"] * 2


async def test_a_name_another_checkpoint_may_yet_take_is_looked_up_again_each_second(
    services: Services, hops: list[str], clock: Clock
) -> None:
    """An SDXL "m" still being copied into the models folder does not take the name from the
    SD 1.5 "m" in Stable-diffusion/ yet; it does once whole, its weights written in its part
    folder (no folder of the winner's or the models folder changes): until then the name is
    looked up again once a second, not at every ask."""
    models = services.registry.models_dir
    sd15 = models / "Stable-diffusion" / "m"
    diffusers_model(sd15, unet_sample_size=64)
    sdxl = models / "m"
    diffusers_model(sdxl, unet_sample_size=128)
    weights = unet_weights(sdxl)
    whole = weights.read_bytes()
    weights.write_bytes(whole[:-8])  # still copying
    settled(
        models,
        models / "Stable-diffusion",
        sd15,
        sd15 / "unet" / "config.json",
        sdxl,
        sdxl / "unet",
    )
    assert await side_of(services, "m") == 512
    assert await side_of(services, "m") == 512
    assert hops == ["read_native_sides"]
    clock.past_the_window()
    assert await side_of(services, "m") == 512
    assert hops == ["read_native_sides"] * 2
    weights.write_bytes(whole)  # the copy ends
    clock.past_the_window()
    assert await side_of(services, "m") == 1024


def unet_weights(folder: Path) -> Path:
    """A diffusers folder's UNet named in its index, with whole weights: the file."""
    (folder / "model_index.json").write_text(
        json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]})
    )
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(safetensors_bytes())
    return weights


def safetensors_bytes() -> bytes:
    """A whole safetensors file: one tensor of four floats."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(16)


def single_file_model(path: Path, *, whole: bool = True) -> None:
    """A checkpoint file holding no UNet (an SD3 or Flux transformer): priced at 1024."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = safetensors_bytes()
    path.write_bytes(data if whole else data[:-8])


async def test_a_checkpoint_folder_made_with_the_name_in_it_takes_the_name(
    services: Services, clock: Clock
) -> None:
    models = services.registry.models_dir
    sd15 = models / "checkpoints" / "m"
    diffusers_model(sd15, unet_sample_size=64)
    settled(models, sd15.parent, sd15, sd15 / "unet" / "config.json")
    assert await side_of(services, "m") == 512
    single_file_model(models / "Stable-diffusion" / "m.safetensors")  # searched before
    clock.past_the_window()
    assert await side_of(services, "m") == 1024


async def test_a_model_not_found_is_read_again_once_installed(
    services: Services, hops: list[str], clock: Clock
) -> None:
    models = services.registry.models_dir
    (models / "Stable-diffusion").mkdir(parents=True)
    settled(models, models / "Stable-diffusion")
    assert await side_of(services, "m") == UNKNOWN_MODEL_SIDE
    clock.past_the_window()
    assert await side_of(services, "m") == UNKNOWN_MODEL_SIDE
    assert hops == ["read_native_sides"]
    single_file_model(models / "checkpoints" / "m.safetensors")
    clock.past_the_window()
    assert await side_of(services, "m") == 1024


@pytest.mark.parametrize("asked", ["m", None], ids=["by-its-name", "first-installed"])
async def test_a_model_added_in_a_checkpoint_subfolder_is_read_at_the_next_window(
    services: Services, hops: list[str], clock: Clock, asked: str | None
) -> None:
    """A checkpoint copied into ``Stable-diffusion/sdxl/`` changes only that subfolder's time:
    the side kept for its name (not installed until then), or for the first installed (it
    sorts first), is read again once the window is over."""
    models = services.registry.models_dir
    sdxl = models / "Stable-diffusion" / "sdxl"
    diffusers_model(models / "z", unet_sample_size=64)
    sdxl.mkdir(parents=True)
    settled(*models.rglob("*"), models)
    before = UNKNOWN_MODEL_SIDE if asked else 512
    assert await side_of(services, asked) == before
    clock.past_the_window()
    assert await side_of(services, asked) == before
    assert hops == ["read_native_sides"]
    single_file_model(sdxl / "m.safetensors")
    settled(sdxl / "m.safetensors")  # a whole copy: no top folder's time moved
    clock.past_the_window()
    assert await side_of(services, asked) == 1024
    assert hops == ["read_native_sides"] * 2


async def test_a_model_put_in_a_models_folder_made_since_the_read_is_read_at_the_next_window(
    services: Services, clock: Clock
) -> None:
    """No models folder at the read: its absence is stamped, so its coming is a change."""
    assert await side_of(services, None) == UNKNOWN_MODEL_SIDE
    clock.past_the_window()
    single_file_model(services.registry.models_dir / "Stable-diffusion" / "m.safetensors")
    clock.past_the_window()
    assert await side_of(services, None) == 1024


async def test_the_first_installed_is_read_again_when_a_copy_sorting_first_ends_in_place(
    services: Services, clock: Clock
) -> None:
    """Model "a" (first by name) is still being copied when the side of the first installed
    is read; its copy ends with no folder changing, and "a" is the first installed then."""
    models = services.registry.models_dir
    diffusers_model(models / "b", unet_sample_size=64)
    copying = models / "a.safetensors"
    single_file_model(copying, whole=False)
    settled(models, models / "b", models / "b" / "unet" / "config.json", copying)
    assert await side_of(services, None) == 512
    single_file_model(copying)  # the copy ends
    clock.past_the_window()
    assert await side_of(services, None) == 1024


def checkpoint(path: Path) -> None:
    """A diffusers folder (512) where ``path`` has no suffix, else a file (1024; a pickle
    of the older, non-zip format where it is ``.ckpt``)."""
    if path.suffix == ".ckpt":
        path.write_bytes(b"\x80\x02 weights")
    elif path.suffix:
        single_file_model(path)
    else:
        diffusers_model(path, unet_sample_size=64)


@pytest.mark.parametrize(
    ("winner", "hidden", "side"),
    [("m", "m.safetensors", 512), ("m.safetensors", "m.ckpt", 1024)],
    ids=["diffusers-folder-before-its-file", "file-before-its-pickle"],
)
async def test_a_checkpoint_hidden_in_the_winners_folder_makes_no_read_each_second(
    services: Services, hops: list[str], clock: Clock, winner: str, hidden: str, side: int
) -> None:
    """Sorted after the file that has the name in its folder (a pickle comes after every other
    checkpoint of its name), it takes the name only once that one goes, changing the folder."""
    services.registry.allow_pickle = True
    models = services.registry.models_dir
    models.mkdir()
    checkpoint(models / winner)
    checkpoint(models / hidden)
    settled(*models.rglob("*"), models)
    assert await side_of(services, "m") == side
    for _ in range(10):
        clock.past_the_window()
        assert await side_of(services, "m") == side
    assert hops == ["read_native_sides"]


async def test_a_contested_name_is_read_again_by_one_ask_of_a_burst_each_second(
    services: Services, hops: list[str], clock: Clock
) -> None:
    """An "m" still being copied into the models folder would take the name: each second one
    ask reads it again; the others of that burst get the kept side, with no hop."""
    models = services.registry.models_dir
    sd15 = models / "Stable-diffusion" / "m"
    diffusers_model(sd15, unet_sample_size=64)
    single_file_model(models / "m.safetensors", whole=False)
    settled(*models.rglob("*"), models)
    assert await side_of(services, "m") == 512
    for window in range(1, 4):
        clock.past_the_window()
        sides = await asyncio.gather(*(side_of(services, "m") for _ in range(8)))
        assert sides == [512] * 8
        assert hops == ["read_native_sides"] * (1 + window)


async def test_a_side_read_as_a_checkpoint_folder_changed_is_looked_up_again_each_second(
    services: Services, clock: Clock
) -> None:
    """A checkpoint added in the same tick of a coarse file-system clock (2 s on FAT) as a
    change just before the read leaves its folder's time as it was: until the folders have
    settled, the name is looked up again each second."""
    models = services.registry.models_dir
    sd15 = models / "Stable-diffusion" / "m"
    diffusers_model(sd15, unet_sample_size=64)
    settled(sd15.parent, sd15, sd15 / "unet" / "config.json")
    assert await side_of(services, "m") == 512  # the models folder was just written
    tick = models.stat()
    single_file_model(models / "m.safetensors")
    os.utime(models, ns=(tick.st_atime_ns, tick.st_mtime_ns))  # within the same tick
    clock.past_the_window()
    assert await side_of(services, "m") == 1024


async def test_a_kept_side_stats_the_checkpoint_folders_and_what_it_was_read_from_once_a_second(
    services: Services, hops: list[str], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = services.registry.models_dir
    m = models / "unet" / "m"
    diffusers_model(m, unet_sample_size=64)
    settled(*models.rglob("*"), models)
    assert await side_of(services, "m") == 512
    stats: list[Path] = []
    stat = os.stat

    def counted(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(Path(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    clock.past_the_window()
    assert await side_of(services, "m") == 512
    # The checkpoint folders' trees: the models folder and unet/ (the others are not there).
    folders = [models, models / "unet"]
    read_from = [m / "unet" / "config.json", m / "vae" / "config.json", m]
    assert sorted(stats) == sorted([*read_from, *folders])
    assert hops == ["read_native_sides"]


@pytest.mark.parametrize("sample_size", ["null", '"64"', "1e999", "0", "[]", '{"height": 64}'])
async def test_a_config_without_a_whole_sample_size_prices_at_the_fallback_read_once(
    services: Services, hops: list[str], sample_size: str
) -> None:
    """It only prices: a model whose config gives no side in whole numbers is priced at the
    fallback (its loading says what is wrong), kept like any side, never failing the request."""
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    config = sd / "unet" / "config.json"
    config.write_text(f'{{"sample_size": {sample_size}}}')
    settled(sd, config)
    for _ in range(3):
        assert await side_of(services, "sd") == UNKNOWN_MODEL_SIDE
    assert hops == ["read_native_sides"]
    with pytest.raises(ValueError, match=f"{config} gives sample_size .*not a positive whole"):
        native_side(services.registry.resolve("sd"))


async def test_a_sample_size_of_height_and_width_gives_the_height(services: Services) -> None:
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    (sd / "unet" / "config.json").write_text('{"sample_size": [128, 96]}')
    assert await side_of(services, "sd") == 1024


async def test_a_read_failing_as_no_reader_foresaw_prices_at_the_fallback_read_once(
    services: Services, hops: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    settled(sd, sd / "unet" / "config.json")

    def overlooked(entry: object) -> int:
        raise TypeError("int() argument must be a string, a bytes-like object or a real number")

    monkeypatch.setattr(bot.services, "native_side", overlooked)
    for _ in range(3):
        assert await side_of(services, "sd") == UNKNOWN_MODEL_SIDE
    assert hops == ["read_native_sides"]


async def test_a_first_model_copied_into_an_empty_folder_is_read_once_its_copy_ends(
    services: Services, hops: list[str], clock: Clock
) -> None:
    """No model installed yet and a half one coming: the fallback is not kept, and the side is
    read again once the copy ends in place (which changes no folder)."""
    models = services.registry.models_dir
    half = models / "a.safetensors"
    whole = stand_in_checkpoint(half).read_bytes()
    half.write_bytes(whole[:-2])
    settled(models, half)
    assert await side_of(services, None) == UNKNOWN_MODEL_SIDE
    half.write_bytes(whole)  # the copy ends, in place
    settled(half)
    clock.past_the_window()
    assert await side_of(services, None) == native_side(services.registry.resolve(None))
    assert hops == ["read_native_sides"] * 2


async def test_a_winner_s_weights_written_over_in_place_leave_the_name_to_the_one_behind(
    services: Services, hops: list[str], clock: Clock
) -> None:
    """A diffusers "m" (SD 1.5) has the name over an "m" file in Stable-diffusion/ (1024); a
    half copy written over its UNet's weights changes no folder and none of its configs, yet
    leaves it out: the name, and its side, go to the file behind it, and come back once the
    copy ends."""
    models = services.registry.models_dir
    folder = models / "m"
    diffusers_model(folder, unet_sample_size=64)
    weights = unet_weights(folder)
    whole = weights.read_bytes()
    single_file_model(models / "Stable-diffusion" / "m.safetensors")
    settled(*models.rglob("*"), models)
    assert await side_of(services, "m") == 512
    clock.past_the_window()
    assert await side_of(services, "m") == 512  # nothing changed: from memory
    assert hops == ["read_native_sides"]
    weights.write_bytes(whole[:-8])  # a half copy over it, in place
    settled(weights)
    clock.past_the_window()
    assert await side_of(services, "m") == 1024
    weights.write_bytes(whole)  # the copy ends
    settled(weights)
    clock.past_the_window()
    assert await side_of(services, "m") == 512


async def test_a_split_winner_s_part_written_over_in_place_leaves_the_name_to_the_one_behind(
    services: Services, clock: Clock
) -> None:
    """A split release "m" (its transformer in Stable-diffusion/, its T5 in text_encoder/)
    has the name over a diffusers "m" in checkpoints/ (SD 1.5); a half copy written over its
    T5 changes no checkpoint folder, yet leaves it out: the name, and its side, go to the
    folder behind it, and come back once the copy ends."""
    from inference.flow_tiny import write_tiny_flow_checkpoint

    models = services.registry.models_dir
    write_tiny_flow_checkpoint(models / "Stable-diffusion" / "m.safetensors", parts_dir=models)
    diffusers_model(models / "checkpoints" / "m", unet_sample_size=64)
    settled(*models.rglob("*"), models)
    first = await side_of(services, "m")
    assert first != 512
    t5 = models / "text_encoder" / "tiny-t5xxl.safetensors"
    whole = t5.read_bytes()
    t5.write_bytes(whole[: len(whole) // 2])  # a half copy over it, in place
    settled(t5)
    clock.past_the_window()
    assert services.registry.resolve("m").path.parent.name == "checkpoints"
    assert await side_of(services, "m") == 512
    t5.write_bytes(whole)  # the copy ends
    settled(t5)
    clock.past_the_window()
    assert await side_of(services, "m") == first
