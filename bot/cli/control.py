"""``easel render``'s ControlNet options: ``--control-image PATH --control-type canny``
(repeat both for several ControlNets) with optional ``--control-model``, ``--control-weight``,
``--control-start`` and ``--control-end`` (given once for all, or once per image)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from inference.control_units import CONTROL_TYPES, ControlUnit

if TYPE_CHECKING:  # the registry is imported where it is used, to keep start-up light
    from inference.registry import ModelRegistry

Value = TypeVar("Value")


class ControlUsageError(ValueError):
    """The ControlNet flags do not fit together; the message names them."""


def add_control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control-image",
        type=Path,
        action="append",
        help="guide the render with a ControlNet reading this picture (repeatable)",
    )
    parser.add_argument("--control-type", choices=CONTROL_TYPES, action="append")
    parser.add_argument(
        "--control-model", action="append", help="a ControlNet in EASEL_MODELS_DIR/ControlNet"
    )
    parser.add_argument("--control-weight", type=float, action="append", help="0-2 (default 1)")
    parser.add_argument("--control-start", type=float, action="append", help="0-1 (default 0)")
    parser.add_argument("--control-end", type=float, action="append", help="0-1 (default 1)")


def _per_image(flag: str, values: Sequence[Value] | None, count: int) -> Sequence[Value | None]:
    """One value per control image: none given, one for all, or one each."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise ControlUsageError(
            f"{flag} was given {len(values)} times for {count} control images: give it once "
            "for all of them or once per image"
        )
    return list(values)


def control_units_from_args(args: argparse.Namespace) -> list[ControlUnit]:
    images: list[Path] = args.control_image or []
    if not images:
        flags = ("type", "model", "weight", "start", "end")
        if any(getattr(args, f"control_{flag}") for flag in flags):
            raise ControlUsageError("the --control-* options need --control-image PATH")
        return []
    if not args.control_type:
        raise ControlUsageError(
            f"--control-image needs --control-type ({', '.join(CONTROL_TYPES)})"
        )
    count = len(images)
    columns = zip(
        _per_image("--control-type", args.control_type, count),
        _per_image("--control-model", args.control_model, count),
        _per_image("--control-weight", args.control_weight, count),
        _per_image("--control-start", args.control_start, count),
        _per_image("--control-end", args.control_end, count),
        strict=True,
    )
    return [
        ControlUnit(
            module=str(module),
            image=str(image),
            model=model,
            weight=1.0 if weight is None else weight,
            guidance_start=0.0 if start is None else start,
            guidance_end=1.0 if end is None else end,
        )
        for image, (module, model, weight, start, end) in zip(images, columns, strict=True)
    ]


def check_controls_installed(units: Sequence[ControlUnit], registry: ModelRegistry) -> None:
    """Each ``--control-model`` is installed, and some ControlNet is where a unit names none
    (``missing_controlnets``): in the operator's words, naming those installed and where one
    goes (a member's refusal, ``check_control_models``, names neither)."""
    from inference.control_units import controlnet_install_hint, missing_controlnets

    missing = missing_controlnets(units, registry)
    if missing is None:
        return
    hint = controlnet_install_hint(registry.models_dir)
    if missing.named is not None:
        installed = sorted(missing.installed, key=str.casefold)
        raise ControlUsageError(
            f"--control-model {missing.named!r} is not installed; installed: "
            f"{', '.join(installed) or f'none ({hint})'}"
        )
    raise ControlUsageError(f"--control-image needs a ControlNet, and none is installed: {hint}")
