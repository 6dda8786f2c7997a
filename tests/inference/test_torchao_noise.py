"""torchao 0.18's import noise (torch 2.14's pytree Enum deprecation, diffusers 0.42's missing
torchao tensor classes) is dropped, and nothing else on those loggers."""

from __future__ import annotations

import enum
import logging
import subprocess
import sys
from pathlib import Path

from inference.torchao_noise import DIFFUSERS_TORCHAO_LOGGER, PYTREE_LOGGER

ROOT = Path(__file__).parents[2]
ENUM_DEPRECATION = "is an Enum subclass and is now natively supported by torch.compile"
TENSOR_IMPORT = "Unable to import `torchao` Tensor objects"


def test_loading_diffusers_with_torchao_installed_logs_neither() -> None:
    script = (
        "import sys, inference\n"
        "from diffusers import DiffusionPipeline\n"
        "print('torchao' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "True"  # torchao was imported, so its noise would show
    assert ENUM_DEPRECATION not in run.stderr and TENSOR_IMPORT not in run.stderr, run.stderr


class Elsewhere(enum.Enum):
    ONE = 1


def test_the_filter_drops_only_those_two_texts() -> None:
    """Level aside (Easel's engine keeps diffusers' loggers at errors: their warnings no
    longer show at all), the filter drops only the two texts it names."""
    shown: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in (PYTREE_LOGGER, DIFFUSERS_TORCHAO_LOGGER)]
    pytree, diffusers_torchao = loggers
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # torch's logger does not propagate
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)  # Easel's engine keeps diffusers' at errors
    try:
        pytree.warning("%s " + ENUM_DEPRECATION + " as an opaque value type.", Elsewhere)
        pytree.warning("another pytree warning")
        diffusers_torchao.warning("torchao is too old")
        diffusers_torchao.warning(TENSOR_IMPORT + ". This may affect loading checkpoints")
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert [message[:22] for message in shown] == [
        f"{Elsewhere} is an Enum"[:22],
        "another pytree warning",
        "torchao is too old",
    ]
