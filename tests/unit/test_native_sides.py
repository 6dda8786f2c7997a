"""Services.native_side: a model's native side (what an unsized request is priced at) is read
from its configs once, on a thread, and then answered from memory until what it was read
from changes (the event loop asks it before a command's acknowledgement)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.accounting import UNKNOWN_MODEL_SIDE
from bot.services import Services
from bot.settings import load_settings
from db.database import connect
from inference.registry import SCAN_MAX_AGE_NS


def diffusers_model(folder: Path, unet_sample_size: int) -> None:
    """A diffusers folder whose UNet config says its side in latents."""
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    write_config(folder, unet_sample_size)


def write_config(folder: Path, unet_sample_size: int) -> None:
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": unet_sample_size}))


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
        services = Services.build(conn, settings)
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
    assert await services.native_side("sd") == 512
    assert await services.native_side("sd") == 512  # just written: not kept yet
    settled(sd, sd / "unet" / "config.json")
    assert hops == ["read_native_side"] * 2
    for _ in range(3):
        assert await services.native_side("sd") == 512
    assert hops == ["read_native_side"] * 3
    write_config(sd, unet_sample_size=128)  # in place
    clock.past_the_window()
    assert await services.native_side("sd") == 1024
    assert hops == ["read_native_side"] * 4


async def test_a_kept_side_is_taken_without_a_stat_for_a_second_then_looked_at_again(
    services: Services, hops: list[str], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst asks before every acknowledgement: its paths are stat'ed once a second, not
    per command; a change in that second shows once it is over."""
    sd = services.registry.models_dir / "sd"
    diffusers_model(sd, unet_sample_size=64)
    settled(sd, sd / "unet" / "config.json")
    assert await services.native_side("sd") == 512
    stats: list[object] = []
    stat = os.stat

    def counted(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(path)
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    write_config(sd, unet_sample_size=128)  # in place, within the second
    clock.now_ns += SCAN_MAX_AGE_NS - 1
    for _ in range(3):
        assert await services.native_side("sd") == 512
    assert stats == []
    clock.now_ns += 1
    assert await services.native_side("sd") == 1024
    assert stats and hops == ["read_native_side"] * 2


async def test_the_first_installed_is_read_again_when_another_model_comes_first(
    services: Services, hops: list[str], clock: Clock
) -> None:
    models = services.registry.models_dir
    diffusers_model(models / "b", unet_sample_size=64)
    settled(models, models / "b", models / "b" / "unet" / "config.json")
    assert await services.native_side(None) == 512
    assert await services.native_side(None) == 512
    diffusers_model(models / "a", unet_sample_size=128)  # first by name now
    clock.past_the_window()
    assert await services.native_side(None) == 1024
    assert hops == ["read_native_side"] * 2


async def test_models_not_here_are_priced_at_the_fallback_read_once(
    services: Services, hops: list[str]
) -> None:
    """A broker's workers hold the models: nothing to read here, and no hop after the first."""
    for _ in range(3):
        assert await services.native_side("on-a-worker") == UNKNOWN_MODEL_SIDE
    assert hops == ["read_native_side"]
