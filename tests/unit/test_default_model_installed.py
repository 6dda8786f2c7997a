"""A request that names no model passes over a default or listed model removed from the folder
since it was set: the server's default, else the operator's, else the first listed model that
is still installed."""

from __future__ import annotations

import pytest

from bot.policy.moderation import default_model_here


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
