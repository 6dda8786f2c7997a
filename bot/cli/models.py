"""A checkpoint a command or setting names, checked against those installed before anything
loads, in the operator's words: this machine's model names and folder (a member's refusal
names neither: ``ModelRegistry.resolve``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry is imported where it is used, to keep start-up light
    from inference.registry import ModelRegistry


def model_problem(registry: ModelRegistry, name: str | None, given_as: str) -> str | None:
    """Why the checkpoint ``name`` (None: the first installed) cannot load here, or None:
    ``given_as`` (``--model 'x'``, ``EASEL_DEFAULT_MODEL='x'``) and the models installed when
    it is not there; the registry's reason when it is there but left out (a pickle, a copy
    not yet whole)."""
    from inference.not_installed import for_operator
    from inference.types import RenderInputError

    if name is None or name in registry.scan() or name in registry.unusable():
        try:
            registry.resolve(name)
        except RenderInputError as error:
            reason = for_operator(error)
            return reason if name is None else f"{given_as}: {reason}"
        return None
    installed = ", ".join(registry.names()) or f"none (in {registry.models_dir})"
    return f"{given_as} is not installed; installed: {installed}"
