"""``easel doctor`` lists the ControlNets, IP-Adapters and CLIPSeg model installed and says
where each missing one goes: the server's paths a member is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.doctor import Check, diagnose
from bot.settings import load_settings


def addons_check(models: Path, monkeypatch: pytest.MonkeyPatch) -> Check:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    [check] = [check for check in diagnose(load_settings(None)) if check.name == "add-ons"]
    return check


def test_missing_add_ons_are_told_with_where_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = addons_check(tmp_path, monkeypatch)
    assert check.ok
    assert f"ControlNet: none (put a ControlNet in {tmp_path / 'ControlNet'} as" in check.detail
    assert f"IP-Adapter: none (put an IP-Adapter .safetensors file in {tmp_path}" in check.detail
    assert "CLIPSeg: none (Describing a region needs a CLIPSeg model" in check.detail
    assert str(tmp_path / "clipseg") in check.detail


def test_installed_add_ons_are_named(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = addons_check(tiny_models_dir, monkeypatch)
    assert check.detail.startswith("ControlNet: tiny-controlnet; IP-Adapter: none (")
