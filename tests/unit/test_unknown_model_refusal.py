"""An unknown model's error never names every model on disk: the engine's names none (it
cannot know which a server allows; its log names them for operators), the request layer's
names only models the member may use there, and a few of them at most."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.policy.installed_models import MAX_NAMED_MODELS, model_not_installed
from bot.user_errors import Reason
from inference.registry import ModelRegistry
from inference.types import RenderInputError


def test_the_engines_error_names_no_installed_model_and_the_log_names_them_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("allowed-here", "left-out-here"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    with caplog.at_level(logging.WARNING), pytest.raises(RenderInputError) as error:
        ModelRegistry(tmp_path).resolve("allowed-hre")
    assert str(error.value) == "unknown model 'allowed-hre': it is not installed on this device"
    assert "allowed-here, left-out-here" in caplog.text


def test_a_few_usable_models_are_all_named() -> None:
    refusal = model_not_installed("retired", "retired", {"tiny", "old"})
    assert refusal.reason is Reason.MODEL
    assert str(refusal) == "Model 'retired' is not installed on this bot; you may use: old, tiny."


def test_many_usable_models_give_the_closest_few_only() -> None:
    usable = [f"model-{n:02}" for n in range(MAX_NAMED_MODELS)] + ["dreamshaper-8"]
    refusal = str(model_not_installed("dreamshaper8", "dreamshaper8", usable))
    assert refusal == (
        "Model 'dreamshaper8' is not installed on this bot; did you mean dreamshaper-8? "
        "/models lists those you may use."
    )
    far = str(model_not_installed("zzz", "zzz", usable))
    assert far == "Model 'zzz' is not installed on this bot; /models lists those you may use."


def test_none_usable_is_said_so() -> None:
    refusal = str(model_not_installed("x", "x", []))
    assert refusal == "Model 'x' is not installed on this bot; none you may use is installed."
