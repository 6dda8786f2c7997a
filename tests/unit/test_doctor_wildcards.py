"""``easel doctor`` counts the wildcards offered and names each wildcard file left out, with
why (a member naming one of its wildcards is only told it is unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.doctor import Check, diagnose
from bot.settings import load_settings


def wildcard_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Check]:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("EASEL_WILDCARDS_DIR", str(tmp_path / "wildcards"))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    return [c for c in diagnose(load_settings(None)) if c.name.startswith("wildcard")]


def test_wildcard_files_left_out_are_named_with_their_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "colour.txt").write_text("red\n", encoding="utf-8")
    (folder / "bomb.yaml").write_text("a: &a [x]\nb: *a\n", encoding="utf-8")
    with (folder / "huge.txt").open("wb") as huge:
        huge.truncate(10_000_001)
    offered, *left_out = wildcard_checks(tmp_path, monkeypatch)
    assert offered == Check("wildcards", True, f"1 in {folder}")
    assert left_out == [
        Check(
            f"wildcard file {folder / 'bomb.yaml'}",
            False,
            "left out: it uses the YAML alias *a, which wildcard files may not (write the "
            "values out)",
        ),
        Check(
            f"wildcard file {folder / 'huge.txt'}",
            False,
            "left out: it is 10,000,001 bytes, over the limit of 10,000,000",
        ),
    ]


def test_no_wildcards_folder_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert wildcard_checks(tmp_path, monkeypatch) == [
        Check("wildcards", True, f"no folder at {tmp_path / 'wildcards'}: none offered")
    ]
