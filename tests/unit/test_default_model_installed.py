"""A request that names no model passes over a default or listed model removed from the folder
since it was set: the server's default, else the operator's, else the first listed model that
is still installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.policy.moderation import default_model_here
from inference.registry import ModelRegistry
from tests.support.checkpoint_files import stand_in_checkpoint


@pytest.mark.parametrize(
    ("server_default", "operator_default", "allowed", "installed", "expected"),
    [
        ("gone", "big", set(), {"big", "tiny"}, "big"),
        ("gone", "also-gone", set(), {"tiny"}, None),  # the engine takes the first installed
        (None, None, {"alpha", "tiny"}, {"tiny"}, "tiny"),  # the first listed was removed
        ("alpha", "big", {"alpha", "tiny"}, {"big", "tiny"}, "tiny"),
        (None, None, {"alpha", "beta"}, {"tiny"}, "alpha"),  # none listed is: refused, naming
        ("own", None, set(), None, "own"),  # not known: as set
    ],
)
def test_a_default_no_longer_installed_is_passed_over(
    server_default: str | None,
    operator_default: str | None,
    allowed: set[str],
    installed: set[str] | None,
    expected: str | None,
) -> None:
    chosen = default_model_here(server_default, operator_default, allowed, installed)
    assert chosen == expected


def test_a_default_being_copied_over_is_kept_and_refused_as_such(tmp_path: Path) -> None:
    """Replaced in place, the server's default is held though it would not load yet: the
    request renders with no other model (of maybe another family and price), and the render's
    lookup refuses it as still copying."""
    stand_in_checkpoint(tmp_path / "alpha.safetensors", b"a" * 64)
    whole = stand_in_checkpoint(tmp_path / "house.safetensors", b"h" * 64).read_bytes()
    (tmp_path / "house.safetensors").write_bytes(whole[: len(whole) // 2])  # mid-copy
    registry = ModelRegistry(tmp_path)
    assert "house" in registry.unusable()
    assert default_model_here("house", None, (), registry.held_names()) == "house"
    assert default_model_here("house", None, ("alpha", "house"), registry.held_names()) == "house"
