"""What the model lists show for each installed model: its family and its denoiser's GGUF
quantization, from headers and configs (never weights), read again only when the model's
files change. /models, its page buttons and /imagine's model autocomplete (a call per
keystroke) then only walk the folders and stat each model's files.

Pure Python (no torch): call it on a thread, it touches the disk.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from inference.memory import gguf_quantization
from inference.metadata import checkpoint_family
from inference.registry import ModelEntry, ModelRegistry


@dataclass(frozen=True)
class ListedModel:
    family: str  # as people say it: SD 1.5, SDXL, Flux dev ("unknown" when unreadable)
    gguf: str | None  # the GGUF type most of its denoiser is packed in (Q8_0); None: none

    @property
    def label(self) -> str:
        """``SD 3, GGUF Q8_0``."""
        return self.family if self.gguf is None else f"{self.family}, GGUF {self.gguf}"


def listed_model(entry: ModelEntry) -> ListedModel:
    return ListedModel(checkpoint_family(entry), gguf_quantization(entry))


def installed_models(registry: ModelRegistry) -> dict[str, ListedModel]:
    """Every loadable model, by name; headers read only for a new set of file versions."""
    versions = tuple(_version(entry) for entry in registry.loadable().values())
    return dict(_listed(versions))


_Version = tuple[ModelEntry, int, int]


def _version(entry: ModelEntry) -> _Version:
    """What changes with a model's files: a file's size and mtime; for a diffusers folder, the
    latest mtime of it and its component folders (a GGUF dropped into unet/ changes unet/'s)."""
    folder = entry.path
    try:
        paths = (
            [folder, *(p for p in folder.iterdir() if p.is_dir())] if folder.is_dir() else [folder]
        )
        stats = [path.stat() for path in paths]
    except OSError:  # removed since the scan: read (and found unreadable) with this key
        return entry, -1, -1
    return entry, sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


@functools.lru_cache(maxsize=8)
def _listed(versions: tuple[_Version, ...]) -> tuple[tuple[str, ListedModel], ...]:
    return tuple((entry.name, listed_model(entry)) for entry, _, _ in versions)
