"""A command in a burst is acknowledged from memory (issue 12, item 3): once its model's
native side is known, reading it again takes no thread hop before the acknowledgement; a
/compare across models reads the sides it lacks in one hop, not one per model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.acknowledge_first import AcknowledgeFirst
from bot.app import build
from inference import control_units
from inference.registry import ModelRegistry
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.e2e.test_controlnet import edges_png
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


def hops_and_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """In order from now on: each thread hop by the function it ran, and each command's
    acknowledgement."""
    events: list[str] = []
    to_thread = asyncio.to_thread
    answered = AcknowledgeFirst.answered

    async def recorded_hop(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        events.append(getattr(function, "__qualname__", repr(function)))
        return await to_thread(function, *args, **kwargs)

    def recorded_answer(gate: AcknowledgeFirst, interaction_id: int) -> None:
        events.append(f"answered {interaction_id}")
        answered(gate, interaction_id)

    # The tiny model was written seconds ago: its side is kept at once all the same.
    monkeypatch.setattr("inference.registry.LISTING_SETTLED_NS", 0)
    monkeypatch.setattr(asyncio, "to_thread", recorded_hop)
    monkeypatch.setattr(AcknowledgeFirst, "answered", recorded_answer)
    return events


async def test_a_command_after_the_first_hops_to_no_thread_before_its_acknowledgement(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = hops_and_answers(monkeypatch)
    async with start_easel():
        first = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "Services.read_native_sides" in events[: events.index(f"answered {first.id}")]
        events.clear()
        second = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
        await second.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    # Two hops are left: the prompt's flags parsed off the loop
    # (``cogs.common.requests_for_member``), and the engine's rules of the request as
    # admitted, one hop for all of them (its model's family from its header, cached:
    # ``cogs.common._check_engine_takes``). Another (a file read, a scan) fails here.
    hops_before = events[: events.index(f"answered {second.id}")]
    assert hops_before == [
        "requests_for_member.<locals>.unless_a_preset_is_named",
        "_check_engine_takes",
    ], events


async def test_a_control_picture_s_controlnet_is_checked_off_the_event_loop(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/imagine control:`` lists the ControlNets (a new file's header read, a folder of
    thirty: tens of milliseconds) on a thread, never on the loop that answers everyone."""
    listed_on_loop: list[bool] = []
    listed = control_units.controlnet_files

    def recorded_listing(registry: ModelRegistry) -> dict[str, Path]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a thread of ``asyncio.to_thread``: no loop runs on it
            listed_on_loop.append(False)
        else:
            listed_on_loop.append(True)
        return listed(registry)

    monkeypatch.setattr(control_units, "controlnet_files", recorded_listing)
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "imagine",
            {"prompt": "a cat", **QUICK, "control_type": "canny"},
            attachments={"control": ("edges.png", edges_png())},
        )
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert listed_on_loop and not any(listed_on_loop), listed_on_loop


@pytest.fixture(scope="module")
def two_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """The tiny models folder, its checkpoint there again as ``tiny-too``."""
    directory = tmp_path_factory.mktemp("two-models")
    for entry in tiny_models_dir.iterdir():
        (directory / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (directory / "tiny-too").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    return directory


async def test_a_comparison_reads_its_models_sides_in_one_hop_then_from_memory(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    two_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A /compare across models prices each cell at its model's side before its
    acknowledgement: the sides not yet known in one hop (one per model before), none once
    they are."""
    events = hops_and_answers(monkeypatch)
    across = {"prompt": "a cat", "x": "model", "x_values": "tiny, tiny-too", **QUICK}
    async with running_bot(
        fake_discord, build(easel_settings(fake_discord, tmp_path / "data", two_models_dir))
    ):
        first = await fake_discord.invoke_command("compare", across)
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        hops_before = events[: events.index(f"answered {first.id}")]
        assert hops_before.count("Services.read_native_sides") == 1, events
        events.clear()
        second = await fake_discord.invoke_command("compare", {**across, "seed": 2})
        await second.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    # The /imagine hops, and /compare's own: the models listed for its axis and every cell's
    # family rules (one hop each). No side is read.
    hops_before = events[: events.index(f"answered {second.id}")]
    assert hops_before == [
        "requests_for_member.<locals>.unless_a_preset_is_named",
        "Services.model_names",
        "_check_families",
        "_check_engine_takes",
    ], events
