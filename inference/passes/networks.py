"""The extra networks of one pipeline call: LoRAs, embeddings and the VAE override applied to
the model and removed after, and the hashes the infotext records for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.metadata import vae_latent_channels
from inference.model_cache import LoadedModel, ModelCache
from inference.networks import EmbeddingTokens, applied_embeddings, applied_loras
from inference.passes.jobs import ImageJob
from inference.registry import ModelRegistry
from inference.types import RenderInputError, RenderRequest

# ``options["vae"]`` values meaning "the model's own VAE", as the web UI's settings say it.
MODEL_VAE_NAMES = ("", "Automatic", "None")
# The web UI's short hashes: 10 hex digits for models and VAEs, 12 for extra networks.
VAE_HASH_LENGTH, NETWORK_HASH_LENGTH = 10, 12
# Who each kind of VAE is for, by the latent channels it decodes.
_VAE_FAMILIES = {4: "SD 1.x, 2.x and SDXL", 16: "SD3 and Flux"}


@dataclass(frozen=True)
class JobNetworks:
    """The extra networks and VAE applied to one pipeline call, and what the infotext says."""

    tokens: EmbeddingTokens
    vae: Any | None  # an AutoencoderKL replacing the model's own for this call
    warnings: tuple[str, ...]
    shared_infotext: dict[str, object]
    embedding_hashes: dict[str, str]

    def params(self, job: ImageJob) -> dict[str, object]:
        used = {n: h for n, h in self.embedding_hashes.items() if n in job.embeddings}
        return {**self.shared_infotext, "TI hashes": hash_list(used)}

    def with_warnings(self, job: ImageJob) -> ImageJob:
        if not self.warnings:
            return job
        return dataclasses.replace(job, warnings=(*job.warnings, *self.warnings))


def hash_list(hashes: dict[str, str]) -> str | None:
    """The web UI's ``name: hash, name: hash`` value (None when empty)."""
    return ", ".join(f"{name}: {short}" for name, short in hashes.items()) or None


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
    path = files.get(str(name)) or files.get(Path(str(name)).stem)
    if path is None:
        raise RenderInputError(
            f"unknown VAE {name!r}; available: {_fitting_vaes(files, latent_channels)}"
        )
    if latent_channels is not None and not _vae_fits(path, latent_channels):
        kind = _VAE_FAMILIES.get(latent_channels, "another family")
        raise RenderInputError(
            f"VAE {path.name} is for {_vae_kind(vae_latent_channels(path))} models and this "
            f"model takes a {latent_channels}-channel VAE ({kind}); choose one of: "
            f"{_fitting_vaes(files, latent_channels)}"
        )
    return path


def _fitting_vaes(files: dict[str, Path], latent_channels: int | None) -> str:
    """The VAE names a refusal offers: those of the model's kind (all when unknown)."""
    fitting = [
        stem
        for stem, path in files.items()
        if latent_channels is None or _vae_fits(path, latent_channels)
    ]
    return ", ".join(sorted(fitting)) or "none (put .safetensors files in models/vae)"


def _vae_kind(channels: int | None) -> str:
    return _VAE_FAMILIES.get(channels or 0, f"{channels}-channel")


def _vae_fits(path: Path, latent_channels: int) -> bool:
    """Whether a VAE file decodes ``latent_channels`` (one whose header says nothing is
    offered, and its loading says whether it fits)."""
    channels = vae_latent_channels(path)
    return channels is None or channels == latent_channels


def vae_params(registry: ModelRegistry, vae_path: Path | None) -> dict[str, object]:
    """What the infotext says about the VAE override (nothing without one)."""
    if vae_path is None:
        return {"VAE hash": None, "VAE": None}
    return {"VAE hash": registry.sha256(vae_path)[:VAE_HASH_LENGTH], "VAE": vae_path.name}


@contextmanager
def job_networks(
    registry: ModelRegistry,
    models: ModelCache,
    model: LoadedModel,
    request: RenderRequest,
    jobs: Sequence[ImageJob],
) -> Iterator[JobNetworks]:
    """Apply the jobs' LoRAs (one set: ``Engine._run`` groups by it), embeddings and the VAE
    override to ``model`` for one pipeline call; everything is removed afterwards."""
    pipeline = model.pipeline
    lora_files = registry.network_files("lora")
    embedding_files = registry.network_files("embedding")
    embeddings = sorted({name for job in jobs for name in job.embeddings})
    vae_path = vae_file(registry, request, model.pipeline.vae.config.latent_channels)
    vae = None if vae_path is None else models.vae_for(model, vae_path)
    with (
        applied_loras(pipeline, jobs[0].loras, lora_files) as loras,
        applied_embeddings(pipeline, embeddings, embedding_files) as (tokens, applied),
    ):
        yield JobNetworks(
            tokens=tokens,
            vae=vae,
            warnings=(*loras.warnings, *applied.warnings),
            shared_infotext={
                **vae_params(registry, vae_path),
                "Lora hashes": hash_list(short_hashes(registry, loras.names, lora_files)),
            },
            embedding_hashes=short_hashes(registry, applied.names, embedding_files),
        )


def short_hashes(
    registry: ModelRegistry, names: Sequence[str], files: dict[str, Path]
) -> dict[str, str]:
    return {name: registry.sha256(files[name])[:NETWORK_HASH_LENGTH] for name in names}
