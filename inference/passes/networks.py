"""The extra networks of one pipeline call: LoRAs, embeddings and the VAE override applied to
the model and removed after, and the hashes the infotext records for them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.model_cache import LoadedModel, ModelCache, VaeOverride
from inference.networks import EmbeddingPlaceholders, applied_embeddings, applied_loras
from inference.passes.jobs import ImageJob
from inference.registry import ModelRegistry
from inference.types import RenderRequest
from inference.vae_files import vae_file

# The web UI's short hashes: 10 hex digits for models and VAEs, 12 for extra networks.
VAE_HASH_LENGTH, NETWORK_HASH_LENGTH = 10, 12


@dataclass(frozen=True)
class JobNetworks:
    """The extra networks and VAE applied to one pipeline call, and what the infotext says."""

    tokens: EmbeddingPlaceholders
    vae: Any | None  # an AutoencoderKL replacing the model's own for this call
    # Every picture of the call applies the same LoRAs (``Engine._run`` groups by them).
    lora_warnings: tuple[str, ...]
    # By name: the pictures of a call, of different members, may name different embeddings.
    embedding_warnings: Mapping[str, str]
    shared_infotext: dict[str, object]
    embedding_hashes: dict[str, str]

    def params(self, job: ImageJob) -> dict[str, object]:
        shadowed = self.tokens.shadowed(job.embeddings)
        used = {
            name: short
            for name, short in self.embedding_hashes.items()
            if name in job.embeddings and name not in shadowed
        }
        return {**self.shared_infotext, "TI hashes": hash_list(used)}

    def with_warnings(self, job: ImageJob) -> ImageJob:
        """``job`` with the warnings about the networks its own prompt names, never those
        another picture of the call named (they would tell a word of its prompt)."""
        skipped = [
            self.embedding_warnings[n] for n in job.embeddings if n in self.embedding_warnings
        ]
        shadowed = [
            f"embedding {name!r} skipped: its name reads as {first!r} (letter case is "
            "not told apart), which is used"
            for name, first in self.tokens.shadowed(job.embeddings).items()
        ]
        warnings = (*self.lora_warnings, *skipped, *shadowed)
        if not warnings:
            return job
        return dataclasses.replace(job, warnings=(*job.warnings, *warnings))


def hash_list(hashes: dict[str, str]) -> str | None:
    """The web UI's ``name: hash, name: hash`` value (None when empty)."""
    return ", ".join(f"{name}: {short}" for name, short in hashes.items()) or None


def vae_params(override: VaeOverride | None) -> dict[str, object]:
    """What the infotext says about the VAE override (nothing without one): the hash of the
    file as it was loaded."""
    if override is None:
        return {"VAE hash": None, "VAE": None}
    return {"VAE hash": override.sha256[:VAE_HASH_LENGTH], "VAE": override.path.name}


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
    override = None if vae_path is None else models.vae_for(model, vae_path)
    with (
        applied_loras(pipeline, jobs[0].loras, lora_files) as loras,
        applied_embeddings(pipeline, embeddings, embedding_files) as (tokens, applied),
    ):
        yield JobNetworks(
            tokens=tokens,
            vae=None if override is None else override.vae,
            lora_warnings=loras.warnings,
            embedding_warnings=applied.skipped,
            shared_infotext={
                **vae_params(override),
                "Lora hashes": hash_list(
                    short_hashes(registry, loras.names, lora_files, tensor_data=True)
                ),
            },
            embedding_hashes=short_hashes(registry, applied.names, embedding_files),
        )


def short_hashes(
    registry: ModelRegistry,
    names: Sequence[str],
    files: dict[str, Path],
    *,
    tensor_data: bool = False,
) -> dict[str, str]:
    """Each file's short hash. ``tensor_data``: a ``.safetensors`` file's is of its tensor data
    alone, as the web UI writes ``Lora hashes`` (and Civitai's AutoV3 reads them), so edited
    metadata keeps it."""
    return {
        name: registry.sha256(
            files[name], tensors_only=tensor_data and files[name].suffix == ".safetensors"
        )[:NETWORK_HASH_LENGTH]
        for name in names
    }
