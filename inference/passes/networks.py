"""The extra networks of one pipeline call: LoRAs, embeddings and the VAE override applied to
the model and removed after, and the hashes the infotext records for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.model_cache import LoadedModel, ModelCache
from inference.networks import EmbeddingTokens, applied_embeddings, applied_loras
from inference.passes.jobs import ImageJob
from inference.registry import ModelRegistry
from inference.types import RenderRequest
from inference.vae_files import vae_file

# The web UI's short hashes: 10 hex digits for models and VAEs, 12 for extra networks.
VAE_HASH_LENGTH, NETWORK_HASH_LENGTH = 10, 12


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
