"""An unknown model's error never names every model on disk: the engine's names none (it
cannot know which a server allows; its log names them for operators), the request layer's
names only models the member may use there, and a few of them at most."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.policy.unavailable import MAX_NAMED, unavailable_here
from bot.user_errors import Reason
from inference.registry import ModelRegistry
from inference.types import RenderInputError
from tests.support.checkpoint_files import stand_in_checkpoint


def test_the_engines_error_names_no_installed_model_and_the_log_names_them_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("allowed-here", "left-out-here"):
        stand_in_checkpoint(tmp_path / f"{name}.safetensors")
    with caplog.at_level(logging.WARNING), pytest.raises(RenderInputError) as error:
        ModelRegistry(tmp_path).resolve("allowed-hre")
    assert str(error.value) == ("model 'allowed-hre' is not installed on this server: ask an admin")
    assert "installed: allowed-here, left-out-here" in caplog.text


def test_a_few_usable_models_are_all_named() -> None:
    refusal = unavailable_here("model", "retired", {"tiny", "old"}, "/models")
    assert refusal.reason is Reason.MODEL
    assert str(refusal) == (
        "The model `retired` is not installed or not allowed here. You may use: old, tiny."
    )


def test_many_usable_models_give_the_closest_and_the_first_few() -> None:
    usable = [f"model-{n:02}" for n in range(MAX_NAMED)] + ["dreamshaper-8"]
    refusal = str(unavailable_here("model", "dreamshaper8", usable, "/models"))
    assert refusal == (
        "The model `dreamshaper8` is not installed or not allowed here; did you mean "
        "`dreamshaper-8`? You may use: dreamshaper-8, "
        + ", ".join(usable[: MAX_NAMED - 1])
        + " and 1 more (`/models` lists them all)."
    )
    far = str(unavailable_here("model", "zzz", usable, "/models"))
    assert far.startswith("The model `zzz` is not installed or not allowed here. You may use:")


def test_none_usable_is_said_so() -> None:
    refusal = str(unavailable_here("model", "x", []))
    assert refusal == (
        "The model `x` is not installed or not allowed here; there is none you may use here."
    )
