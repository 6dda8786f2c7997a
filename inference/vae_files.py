"""The VAE file a request names (``options["vae"]``), checked against the model's kind before
any model loads: pure (file headers only, no torch), so the bot can refuse another family's
VAE when a job is submitted (``/use-settings``) with the sentence the render gives."""

from __future__ import annotations

import logging
from pathlib import Path

from inference.metadata import vae_latent_channels
from inference.names import as_typed
from inference.not_installed import NotInstalled
from inference.registry import NO_LONGER_INSTALLED, ModelRegistry
from inference.types import RenderInputError, RenderRequest

log = logging.getLogger(__name__)

# ``options["vae"]`` values meaning "the model's own VAE", as the web UI's settings say it.
MODEL_VAE_NAMES = ("", "Automatic", "None")
# Who each kind of VAE is for, by the latent channels it decodes.
_VAE_FAMILIES = {4: "SD 1.x, 2.x and SDXL", 16: "SD3 and Flux"}


def vae_file(
    registry: ModelRegistry, request: RenderRequest, latent_channels: int | None = None
) -> Path | None:
    """The file ``options["vae"]`` names (None: the model's own VAE). With the model's
    ``latent_channels``, only a VAE of that many is offered and taken (an SD3/Flux VAE
    decodes 16 channels, an SD one 4), the other kind refused in one sentence."""
    name = request.options.get("vae")
    if name is None or name in MODEL_VAE_NAMES:
        return None
    files = registry.network_files("vae")
    # The web UI records the file name (``VAE: x.safetensors``); both spellings work.
    typed = as_typed(str(name))
    path = files.get(typed) or files.get(Path(typed).stem)
    if path is None:
        # A server may allow some VAEs only: the member's error names none (as for models),
        # the operator's log names them all, not the name asked (a member's words).
        log.warning("unknown VAE asked for; installed: %s", ", ".join(sorted(files)))
        raise NotInstalled(f"unknown VAE {name!r}: it is not installed on this device")
    if latent_channels is None:
        return path
    try:
        channels = vae_latent_channels(path)
    except FileNotFoundError:  # removed since its folder was listed
        raise RenderInputError(f"VAE {path.name} is {NO_LONGER_INSTALLED}") from None
    # A header that says nothing is offered: its loading says whether it fits.
    if channels is not None and channels != latent_channels:
        kind = _VAE_FAMILIES.get(latent_channels, "another family")
        raise RenderInputError(
            f"VAE {path.name} is for {_vae_kind(channels)} models and this "
            f"model takes a {latent_channels}-channel VAE ({kind}); choose one of those, or "
            "none for the model's own"
        )
    return path


def _vae_kind(channels: int) -> str:
    return _VAE_FAMILIES.get(channels, f"{channels}-channel")
