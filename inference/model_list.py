"""What the model lists show for each installed model: its family and its denoiser's GGUF
quantization, from headers and configs (never weights), read again only when the model's
files change. /models, its page buttons and /imagine's model autocomplete (a call per
keystroke) then only walk the folders and stat each model's files.

Pure Python (no torch): call it on a thread, it touches the disk.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from inference.memory import gguf_quantization
from inference.metadata import (
    FAMILY_CONFIGS,
    model_families,
    reads_textual_inversion,
    takes_distilled_guidance,
)
from inference.registry import DENOISER_FOLDERS, GGUF_SUFFIX, ModelEntry, ModelRegistry


@dataclass(frozen=True)
class ListedModel:
    family: str  # as people say it: SD 1.5, SDXL, Flux dev ("unknown" when unreadable)
    gguf: str | None  # the GGUF type most of its denoiser is packed in (Q8_0); None: none
    # Whether it may read textual-inversion embeddings, by its family as the engine loads it
    # (``tensor_family``): the metadata ``family`` may be read from can name another base
    # model (a merge's stale field), an SD 1.5 file labelled SD 3.
    reads_embeddings: bool
    # Whether its CFG is Flux's distilled guidance, by the same family (``guidance_of``).
    distilled_guidance: bool

    @property
    def label(self) -> str:
        """``SD 3, GGUF Q8_0``."""
        return self.family if self.gguf is None else f"{self.family}, GGUF {self.gguf}"


def listed_model(entry: ModelEntry) -> ListedModel:
    by_tensors, as_said = model_families(entry)
    return ListedModel(
        as_said,
        gguf_quantization(entry),
        reads_textual_inversion(by_tensors),
        takes_distilled_guidance(by_tensors),
    )


def installed_models(registry: ModelRegistry) -> dict[str, ListedModel]:
    """Every loadable model, by name; headers read only for a new set of file versions."""
    versions = tuple(_version(entry) for entry in registry.loadable().values())
    with _LISTING:
        return dict(_listed(versions))


class FlowModels(NamedTuple):
    """The installed models of a flow family, from one listing: those that take no textual
    inversion (SD3, Flux), and those whose CFG is Flux's distilled guidance (not SD3's)."""

    without_embeddings: list[str]
    distilled_guidance: list[str]


def installed_flow_models(registry: ModelRegistry) -> FlowModels:
    """``FlowModels`` by the models' tensors' family, not their metadata (headers read again
    only when their files change; blocking: one walk for both lists)."""
    listed = installed_models(registry).items()
    return FlowModels(
        [name for name, model in listed if not model.reads_embeddings],
        [name for name, model in listed if model.distilled_guidance],
    )


def models_without_embeddings(registry: ModelRegistry) -> list[str]:
    """``FlowModels.without_embeddings`` (blocking: a walk)."""
    return installed_flow_models(registry).without_embeddings


_Stat = tuple[int, int]  # size, mtime in ns; (-1, -1): missing or unreadable
_Version = tuple[ModelEntry, tuple[_Stat, ...]]


def _version(entry: ModelEntry) -> _Version:
    """What changes with what the listing reads: a file's size and mtime; for a diffusers
    folder, those of it and its component folders (a file added or removed) and of the files
    read from it, the family's configs (``FAMILY_CONFIGS``) and denoiser GGUFs (rewritten in
    place, a file changes no folder's mtime)."""
    folder = entry.path
    if not folder.is_dir():
        return entry, (_stat(folder),)
    try:  # os.scandir, not pathlib's iterdir and glob: this runs per model and keystroke
        components = [child for child in _children(folder) if child.is_dir()]
        ggufs = [
            child
            for component in components
            if component.name in DENOISER_FOLDERS
            for child in _children(component.path)
            if child.name.endswith(GGUF_SUFFIX)
        ]
    except OSError:  # removed since the scan: read (and found unreadable) with this key
        return entry, ()
    configs = [folder / name for name in FAMILY_CONFIGS]
    read: list[Path | os.DirEntry[str]] = [folder, *configs, *components, *ggufs]
    return entry, tuple(_stat(path) for path in read)


def _children(folder: str | Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as children:
        return list(children)


def _stat(path: Path | os.DirEntry[str]) -> _Stat:
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


# One listing at a time: a caller during a read (the first plan, while the start's read runs:
# ``PromptSafety.warm_up``) waits for it and finds it cached, where it read every header again
# (``lru_cache`` shares no call in progress). Held only for a cache look-up once read.
_LISTING = threading.Lock()


@functools.lru_cache(maxsize=8)
def _listed(versions: tuple[_Version, ...]) -> tuple[tuple[str, ListedModel], ...]:
    return tuple((entry.name, listed_model(entry)) for entry, _ in versions)
