"""Which models exist under ``EASEL_MODELS_DIR``, what they are called and their web UI hash.

Pure Python (no torch) so listing and validating model names costs nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any, Literal

from inference.file_hashes import file_sha256, recalled_file_sha256
from inference.file_versions import (
    LISTING_SETTLED_NS,
    PerFileVersion,
    forget_files,
    unreadable,
)
from inference.gguf_header import gguf_problem
from inference.metadata import (
    UNET_INPUT_CONV,
    family_from_tensors,
    pickle_problem,
    safetensors_header,
    safetensors_problem,
)
from inference.names import as_typed
from inference.not_installed import NotInstalled, not_installed
from inference.prompts.extra_networks import TAG_NAME_STOPS
from inference.types import RenderInputError
from inference.upscale import LANCZOS

log = logging.getLogger(__name__)

# "gguf": an SD3/Flux transformer alone, quantized (city96's files), read with its parts from
# the split folders as a transformer-only safetensors is (inference.flow_families).
ModelFormat = Literal["diffusers", "safetensors", "pickle", "gguf"]

# Searched in this order; on a name clash the first one found wins, a pickle only after every
# other checkpoint of its name (``ModelRegistry._found``).
# ``unet``: where Forge keeps transformer-only files (Flux, SD3.5), read with their parts.
CHECKPOINT_FOLDERS = (".", "Stable-diffusion", "checkpoints", "unet")
PICKLE_SUFFIXES = (".ckpt", ".pt")
# A quantized UNet or transformer, in a diffusers folder's unet/ or transformer/ instead of its
# safetensors (inference.quantization).
GGUF_SUFFIX = ".gguf"
# How deep under a checkpoint folder checkpoints are looked for: the web UI's sorting
# (``Stable-diffusion/SDXL/anime/``) and more, never a whole disk through a mislinked folder.
CHECKPOINT_SUBFOLDER_DEPTH = 8
DENOISER_FOLDERS = ("unet", "transformer")
# ``<checkpoint stem>.config/``: a diffusers config folder (no weights) for that checkpoint.
SIDECAR_SUFFIX = ".config"
# Diffusers folders are hashed by their UNet weights, the file that makes the model (SD3 and
# Flux: their transformer's, or its shard index when it is split).
UNET_WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "transformer/diffusion_pytorch_model.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
)

NetworkKind = Literal["lora", "embedding", "vae"]
# Easel's folder names first, then the web UI's; on a name clash the first one found wins.
NETWORK_FOLDERS: dict[NetworkKind, tuple[str, ...]] = {
    "lora": ("lora", "Lora"),
    "embedding": ("embeddings",),
    "vae": ("vae", "VAE"),
}
NETWORK_SUFFIX = ".safetensors"
# Model upscalers (anything spandrel loads): Easel's folder, then the web UI's.
UPSCALER_FOLDERS = ("upscalers", "ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
# Most upscalers are published as pickles; they are listed only where pickles are allowed.
UPSCALER_PICKLE_SUFFIXES = (".pth", ".pt")
# Face restorers (GFPGAN, RestoreFormer: spandrel's "FaceSR" models): Easel's folder, then
# the web UI's. Listed like upscalers (pickles only where allowed). Not the web UI's
# Codeformer/: spandrel keeps CodeFormer in a separately licensed package.
FACE_RESTORER_FOLDERS = ("face_restore", "GFPGAN")
# A kept listing is walked again once this old: a network file system answers a directory's
# stat from a cache (NFS: 30-60 s) and some FUSE mounts never move its mtime, so a change
# there shows within this time, still one walk per many commands under load.
LISTING_MAX_AGE_NS = 10_000_000_000
# A scan of the checkpoint folders answers lookups while none of them changed, for at most this
# long: a checkpoint written in place (a copy still running, a file copied over another) or a
# diffusers folder's part replaced changes no checkpoint folder, so it is checked again within
# this time. 1 s: a member is offered a half-copied file at most 1 s after a directory-level
# check would have caught it (its job then fails and is refunded), while a burst of commands
# (each looking models up several times) scans about once a second, not every lookup (30
# checkpoints: ~4 ms a scan, their headers checked; ~20 us a kept answer).
SCAN_MAX_AGE_NS = 1_000_000_000
# Why a listed file was not read: removed since its folder was listed (the listing can be up
# to ``LISTING_MAX_AGE_NS`` old on a network mount). The member is told, not "internal error".
NO_LONGER_INSTALLED = "no longer installed on this device"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    format: ModelFormat

    @property
    def hashed_file(self) -> Path:
        if self.format != "diffusers":
            return self.path
        for relative in UNET_WEIGHT_FILES:
            if (self.path / relative).is_file():
                return self.path / relative
        gguf = denoiser_gguf(self.path)
        if gguf is not None:
            return gguf
        return self.path / "model_index.json"


def denoiser_gguf(folder: Path) -> Path | None:
    """The GGUF file a diffusers folder's ``unet/`` or ``transformer/`` holds, if any (the
    first in name order)."""
    for name in DENOISER_FOLDERS:
        found = sorted((folder / name).glob(f"*{GGUF_SUFFIX}"))
        if found:
            return found[0]
    return None


def _is_pipeline(folder: Path) -> bool:
    """Whether ``folder`` is a diffusers pipeline's folder: one model, not a folder of them."""
    return (folder / "model_index.json").is_file()


def _entry_for(path: Path) -> ModelEntry | None:
    if path.is_dir() and path.name.endswith(SIDECAR_SUFFIX):
        return None
    if path.is_dir() and _is_pipeline(path):
        return ModelEntry(as_typed(path.name), path, "diffusers")
    if path.is_file() and path.suffix == ".safetensors":
        return ModelEntry(as_typed(path.stem), path, "safetensors")
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        return ModelEntry(as_typed(path.stem), path, "pickle")
    if path.is_file() and path.suffix == GGUF_SUFFIX:
        return ModelEntry(as_typed(path.stem), path, "gguf")
    return None


# The single-file checkpoints a checkpoint folder's listing holds (diffusers folders besides).
_CHECKPOINT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, GGUF_SUFFIX)
# The weight files diffusers reads from a component folder.
_DIFFUSERS_WEIGHTS = (".safetensors", GGUF_SUFFIX)
# What diffusers and transformers read a component's weights from where it holds none of
# those: pickles (as torch saves them, zip archives), read weights-only.
PICKLED_WEIGHTS_SUFFIX = ".bin"
# A sharded component's index (``diffusion_pytorch_model.safetensors.index.json``,
# ``model.bin.index.json``): its ``weight_map`` names the shard files.
WEIGHTS_INDEX_SUFFIX = ".index.json"
# A model's folder (a diffusers or transformers component, a ControlNet, an image encoder)
# holds this beside its weights; a tokenizer's or scheduler's holds none.
MODEL_CONFIG = "config.json"
# Components a pipeline holds that Easel never loads (``safety_checker=None``).
_UNLOADED_COMPONENTS = frozenset({"safety_checker"})


def folder_weights(folder: Path) -> list[Path]:
    """The ``.safetensors`` and ``.gguf`` files diffusers loads from a component folder (each
    shard of sharded weights): the plain ones, else a variant (``.fp16.``) when that is all
    there is."""
    return [folder / name for name in _weights_among(_file_names(folder), _DIFFUSERS_WEIGHTS)]


def loaded_weights(folder: Path, library: str = "diffusers") -> list[Path]:
    """The files a component folder's load reads its weights from, as the completeness
    checks (``weights_problem``) take them: its ``.safetensors`` and ``.gguf`` files
    (``folder_weights``), the index and the shards it names in place of those (there or not:
    one missing is not whole yet), else its pickled ``.bin`` weights (or their index and its
    shards). ``library`` loads it: diffusers follows an index; transformers (a text or image
    encoder) reads the single file an index is named after when it is there, as a
    ``save_pretrained`` into a folder leaves a stale index beside it. A model's folder (its
    ``config.json``) holding none of them stands for the weights it lacks (not whole: a copy
    under way); a folder of no model (a tokenizer's), for none. One listing of the folder,
    and one ``stat`` of an index (read once per version)."""
    names = sorted(_file_names(folder))  # scandir's order is arbitrary: the first index wins
    for suffixes in (_DIFFUSERS_WEIGHTS, (PICKLED_WEIGHTS_SUFFIX,)):
        files = _weights_among(names, suffixes)
        index = next((n for n in names if n.endswith(suffixes[0] + WEIGHTS_INDEX_SUFFIX)), None)
        if index is not None and not (
            library == "transformers" and index.removesuffix(WEIGHTS_INDEX_SUFFIX) in names
        ):
            shards = _index_read(folder / index, None)
            others = [name for name in files if not name.endswith(suffixes[0])]  # a GGUF
            files = [*others, index, *([] if isinstance(shards, str) else shards)]
        if files:
            return sorted(folder / name for name in files)
    return [folder] if MODEL_CONFIG in names else []


def _file_names(folder: Path) -> list[str]:
    """The names in ``folder`` (none when it is not there or does not read)."""
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in entries]
    except OSError:
        return []


def _weights_among(names: Iterable[str], suffixes: tuple[str, ...]) -> list[str]:
    """The names with one of ``suffixes``, sorted: the plain ones (``model.safetensors``),
    else the variants (``model.fp16.safetensors``) when those are all there are."""
    files = sorted(name for name in names if name.endswith(suffixes))
    plain = [name for name in files if len(name.split(".")) == 2]
    return plain or files


# A weights index is a few kilobytes (a name per tensor: SDXL's UNet has ~1,700) naming a few
# shards; past these it is no index (a hostile file), never read whole nor stat'ed shard by shard.
WEIGHTS_INDEX_MAX_BYTES = 16 * 1024 * 1024
WEIGHTS_INDEX_MAX_SHARDS = 1000


def _read_index(path: Path, size: int) -> tuple[str, ...] | str:
    """The shard files a weights index names, sorted; or why it does not read as one."""
    if size > WEIGHTS_INDEX_MAX_BYTES:
        return f"{path.name} is no weights index: {size} bytes, over {WEIGHTS_INDEX_MAX_BYTES}"
    try:
        with path.open("rb") as file:  # grown since its stat: still read no further
            index = json.loads(file.read(WEIGHTS_INDEX_MAX_BYTES + 1))
    except OSError as error:
        return unreadable(path, error)
    except (ValueError, RecursionError):  # cut short (a copy under way), or no JSON
        return f"{path.name} is not a whole weights index ({size} bytes): still copying?"
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    named = list(weight_map.values()) if isinstance(weight_map, dict) else None
    if named is None or not all(isinstance(shard, str) for shard in named):
        # Whole JSON of another shape: it will not become an index by waiting.
        return f"{path.name} is no weights index: its weight_map maps no tensor to a file"
    shards = set(named)
    if not all(shard not in ("", ".", "..") and shard == Path(shard).name for shard in shards):
        return f"{path.name} names weight files outside its folder: no index Easel reads"
    if len(shards) > WEIGHTS_INDEX_MAX_SHARDS:
        return (
            f"{path.name} is no weights index: it names {len(shards)} files, "
            f"over {WEIGHTS_INDEX_MAX_SHARDS}"
        )
    return tuple(sorted(shards))


_INDEXES = PerFileVersion(_read_index)


def _index_read(path: Path, stat: os.stat_result | None) -> tuple[str, ...] | str:
    """The shards the weights index at ``path`` names, or why it does not read as one (read
    once per version; ``stat`` as for ``weights_problem``)."""
    if stat is None:
        try:
            stat = path.stat()
        except OSError as error:
            return unreadable(path, error)
    if not S_ISREG(stat.st_mode):  # a FIFO would hang the read; /dev/zero never end it
        return _not_a_file(path)
    return _INDEXES(path, stat)


def _not_a_file(path: Path) -> str:
    return f"{path.name} is not a regular file: no weights Easel reads"


# A model's config files are a few KB: the registry's scan reads them, so a larger one, or
# one that is no regular file (a FIFO would hang the scan, /dev/zero never end it), is refused.
CONFIG_MAX_BYTES = 1024 * 1024


def config_json(path: Path) -> Any:
    """The JSON of a model's config file (``model_index.json``, ``config.json``), read only
    if it is a regular file of at most ``CONFIG_MAX_BYTES``; raises ``ValueError`` (or
    ``OSError``) saying why not."""
    stat = path.stat()
    if not S_ISREG(stat.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if stat.st_size > CONFIG_MAX_BYTES:
        raise ValueError(f"{path} holds {stat.st_size} bytes, over {CONFIG_MAX_BYTES}")
    with path.open("rb") as file:
        return json.loads(file.read(CONFIG_MAX_BYTES + 1))


def _component_weights(folder: Path) -> list[Path]:
    """The weight files a diffusers folder's pipeline loads (``loaded_weights`` of each
    component ``model_index.json`` names, less those Easel never loads), sorted: a variant or
    another file next to them is not read. No files when the folder or its index is
    unreadable (its load says why)."""
    try:
        index = config_json(folder / "model_index.json")
    except (OSError, ValueError, RecursionError):  # nested past Python's limit: no index
        return []
    if not isinstance(index, dict):
        return []
    components = [
        (name, value[0])
        for name, value in index.items()
        if isinstance(value, list)
        and None not in value
        and value  # [library, class]
        and name not in _UNLOADED_COMPONENTS
    ]
    return sorted(
        file for name, library in components for file in loaded_weights(folder / name, str(library))
    )


def entry_weights(entry: ModelEntry) -> list[Path]:
    """The files whose completeness decides whether ``entry`` is offered (``weights_problem``
    of each): its file and, for a split release, the T5, CLIP and VAE files its load reads
    (``_split_parts``), or a diffusers folder's component weights (``_component_weights``).
    One written over in place changes no checkpoint folder: whoever keeps what rests on the
    entry having its name stamps these too (``bot.services.Services.read_native_side``)."""
    if entry.format == "diffusers":
        return _component_weights(entry.path)
    try:
        stat = entry.path.stat()
    except OSError:
        return [entry.path]
    return [entry.path, *(file for file, _ in _split_parts(entry, stat, {}))]


def _split_parts(
    entry: ModelEntry, stat: os.stat_result, looked: dict[Path, StatAndProblem]
) -> list[tuple[Path, str | None]]:
    """The part files a split release (a transformer alone, its file as ``stat`` found it)
    reads, each with why it would not load (``split_part_choices``; ``looked``: the files
    stat'ed); none for a checkpoint of any other kind."""
    if entry.format not in ("safetensors", "gguf"):
        return []
    # Imported here: that module reads its parts with this one's checks.
    from inference.split_parts import split_part_choices

    return split_part_choices(entry.path, stat, looked)


def weights_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
    """Why the weights file at ``path`` would not load (still being copied, cut short, not
    of its kind), from its header, a pickle's zip directory or a weights index's JSON (cached
    per file version: one ``stat`` once read, none when the caller gives the file's ``stat``);
    a folder standing for weights it lacks (``loaded_weights``) says so. None when it is
    whole."""
    if stat is None:
        try:
            stat = path.stat()
        except OSError as error:
            return unreadable(path, error)
    if S_ISDIR(stat.st_mode):
        return f"{path.name} holds no weights (.safetensors, .gguf or .bin): still copying?"
    if not S_ISREG(stat.st_mode):  # a FIFO's read would hang the scan; /dev/zero's never end
        return _not_a_file(path)
    if path.name.endswith(WEIGHTS_INDEX_SUFFIX):
        shards = _index_read(path, stat)
        return shards if isinstance(shards, str) else None
    if path.suffix == GGUF_SUFFIX:
        return gguf_problem(path, stat)
    if path.suffix in (*PICKLE_SUFFIXES, *UPSCALER_PICKLE_SUFFIXES, PICKLED_WEIGHTS_SUFFIX):
        return pickle_problem(path, stat)
    return safetensors_problem(path, stat)


# A path as a value read from it saw it: (device, inode, mtime_ns, size); None: not there or
# unreadable.
PathStamp = tuple[int, int, int, int] | None


def path_stamp(path: Path) -> PathStamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


@dataclass(frozen=True)
class Stamps:
    """Paths as they were when something was read from them, and when (wall-clock): what says
    whether it still holds (adding, removing or renaming a file changes its directory's
    mtime; writing one in place, its own mtime or size). What the registry's scans and
    listings and the bot's native sides (``bot.services.NativeSides``) are kept by."""

    paths: tuple[Path, ...]
    stamps: tuple[PathStamp, ...]
    taken_at_ns: int  # before the first stamp

    @classmethod
    def take(cls, paths: Iterable[Path]) -> Stamps:
        taken_at_ns = time.time_ns()
        paths = tuple(paths)
        return cls(paths, tuple(map(path_stamp, paths)), taken_at_ns)

    def joined(self, other: Stamps) -> Stamps:
        """Both paths' stamps, as taken at the earlier time."""
        taken_at_ns = min(self.taken_at_ns, other.taken_at_ns)
        return Stamps(self.paths + other.paths, self.stamps + other.stamps, taken_at_ns)

    def present(self) -> Stamps:
        """Only the paths that were there."""
        there = [index for index, stamp in enumerate(self.stamps) if stamp is not None]
        paths = tuple(self.paths[index] for index in there)
        return Stamps(paths, tuple(self.stamps[index] for index in there), self.taken_at_ns)

    def unchanged(self) -> bool:
        """Whether every path is as stamped (one ``stat`` each)."""
        return tuple(map(path_stamp, self.paths)) == self.stamps

    def settled(self) -> bool:
        """Whether every path went unchanged for ``LISTING_SETTLED_NS`` before it was stamped:
        else a change within its last tick of a coarse file-system clock may have left its
        mtime as it was, and what was read from it may not be kept."""
        before = self.taken_at_ns - LISTING_SETTLED_NS
        return all(stamp is None or stamp[2] < before for stamp in self.stamps)


# Tensor names only an add-on's file holds: a LoRA's (kohya's ``lora_unet_``, diffusers' and
# PEFT's ``.lora_A.``, LyCORIS's ``hada_``/``lokr_``) and a VAE's own (its decoder's input
# with no prefix); folder each goes in.
_LORA_MARKS = ("lora_", ".lora.", "hada_w", "lokr_w")
_VAE_MARK = "decoder.conv_in.weight"
_ADDON_FOLDERS = {"LoRA": NETWORK_FOLDERS["lora"][0], "VAE": NETWORK_FOLDERS["vae"][0]}


def _read_addon_kind(path: Path, size: int) -> str | None:
    """``LoRA`` or ``VAE`` when the safetensors file at ``path`` is one of those and no
    checkpoint (no UNet, no SD3/Flux transformer), from its header's tensor names; None for
    anything else (a header that does not read: its completeness check says why)."""
    try:
        header = safetensors_header(path)
        if UNET_INPUT_CONV in header or family_from_tensors(header) is not None:
            return None
    except (OSError, ValueError):
        return None
    except Exception:  # a header no reader foresaw: offered, never every scan failing
        log.info("reading %s for its kind failed", path, exc_info=True)
        return None
    if any(mark in name for name in header for mark in _LORA_MARKS):
        return "LoRA"
    return "VAE" if _VAE_MARK in header else None


_ADDON_KINDS = PerFileVersion(_read_addon_kind)


@dataclass(frozen=True)
class _Scan:
    """The checkpoints found (``ModelRegistry.scan``), those left out with why, and what
    says whether the scan still holds: the checkpoint folders as stamped before it."""

    entries: dict[str, ModelEntry]
    unusable: dict[str, str]
    # Add-on files (a LoRA, a VAE) in a checkpoint folder, by name, with where they go.
    misplaced: dict[str, str]
    # The names a checkpoint left out would take once whole (``ModelRegistry.awaited``).
    awaited: frozenset[str]
    folders: Stamps
    scanned_at_ns: int


@dataclass(frozen=True)
class FolderListing:
    """A folder's files with some suffixes, and what says whether they are still all there:
    each directory's identity and mtime (adding, removing or renaming a file changes its
    directory's mtime; a file replaced in place keeps its name, all a listing holds)."""

    files: tuple[Path, ...]
    # Each directory of the tree, stamped as it was listed (from the listing's start).
    directories: Stamps
    # A symbolic link can change where it points, or its target appear or go, with no
    # directory of the tree changing: a tree holding one (or a directory that went while it
    # was listed) is listed again at every lookup.
    uncertain: bool

    @classmethod
    def walk(
        cls,
        folder: Path,
        suffixes: tuple[str, ...],
        *,
        max_depth: int | None = None,
        whole_folder: Callable[[Path], bool] | None = None,
    ) -> FolderListing:
        """List ``folder`` and its subfolders ``max_depth`` levels down at most (None: all),
        symbolic links to folders followed as the web UI does (models kept on another disk),
        but never into a folder the walk is already inside (a link looping back). A subfolder
        for which ``whole_folder`` holds (a diffusers folder: one model) is listed as a file
        and not entered; one holding a ``config.json`` (a diffusers component's: a pipeline
        half copied, or its parts alone) is neither listed nor entered, nor are hidden ones
        (``.git``), sidecar config folders (``x.config``) and links that do not resolve."""
        listed_at_ns = time.time_ns()
        files: list[Path] = []
        directories: list[Path] = []
        stamps: list[PathStamp] = []
        uncertain = False
        # Each folder to list, its depth, and the folders (resolved) the walk went through to it.
        pending: list[tuple[Path, int, tuple[Path, ...]]] = [
            (folder, 0, (Path(os.path.realpath(folder)),))
        ]
        while pending:
            directory, depth, inside = pending.pop()
            stamp = path_stamp(directory)
            try:
                with os.scandir(directory) as entries:
                    found = list(entries)
            except OSError:
                stamp = None
            if stamp is None:
                uncertain = True
                continue
            directories.append(directory)
            stamps.append(stamp)
            for entry in found:
                uncertain = uncertain or entry.is_symlink()
                path = directory / entry.name
                try:
                    if not entry.is_dir():
                        if path.suffix in suffixes and entry.is_file():
                            files.append(path)
                    elif _unlisted_folder(entry.name):
                        continue
                    elif whole_folder is not None and whole_folder(path):
                        files.append(path)
                    elif whole_folder is not None and (path / MODEL_CONFIG).is_file():
                        continue  # a diffusers component's folder: its weights are no checkpoint
                    elif max_depth is None or depth < max_depth:
                        resolved = inside[-1] / entry.name
                        if entry.is_symlink():
                            resolved = Path(os.path.realpath(path))
                            if resolved in inside or resolved in inside[-1].parents:
                                continue  # back into a folder the walk is in: a loop
                        pending.append((path, depth + 1, (*inside, resolved)))
                except OSError:  # a link looping, a folder this user may not look in
                    continue
        directory_stamps = Stamps(tuple(directories), tuple(stamps), listed_at_ns)
        return cls(tuple(sorted(files)), directory_stamps, uncertain)

    def may_keep(self) -> bool:
        """Whether this listing may answer later lookups (``still_current``)."""
        return not self.uncertain and self.directories.settled()

    def still_current(self) -> bool:
        """Whether it is younger than ``LISTING_MAX_AGE_NS`` and no directory of the tree
        changed since it was listed."""
        if not 0 <= time.time_ns() - self.directories.taken_at_ns < LISTING_MAX_AGE_NS:
            return False
        return self.directories.unchanged()


def _unlisted_folder(name: str) -> bool:
    """Whether a subfolder named ``name`` is left out of every listing: a hidden one (``.git``,
    ``.ipynb_checkpoints``) or a checkpoint's sidecar config folder (no weights)."""
    return name.startswith(".") or name.endswith(SIDECAR_SUFFIX)


def pickles_left_out(files: Iterable[Path]) -> str:
    """The operator's words for pickle files left out as pickles are not allowed here, and
    how to have them read."""
    return (
        f"left out, pickle files: {', '.join(sorted(file.name for file in files))}; "
        "convert them to .safetensors or set EASEL_ALLOW_PICKLE=1"
    )


# Checkpoint and add-on files left out as incomplete or unreadable, and said so: once a
# process, though the bot and each device's engine keep a registry of their own (both list the
# LoRAs and embeddings). Registries are read from several threads.
_UNUSABLE_TOLD: set[Path] = set()
_UNUSABLE_TOLD_LOCK = threading.Lock()


def _told(what: Callable[[], str], file: Path, problem: str | None) -> str | None:
    """``problem`` (None: ``file`` is whole), told the operator once per file until it is whole
    again: ``what()`` (``model x``; named only then, as most files are whole) is not offered."""
    with _UNUSABLE_TOLD_LOCK:
        if problem is not None and file not in _UNUSABLE_TOLD:
            _UNUSABLE_TOLD.add(file)
            log.warning("%s is not offered: %s", what(), problem)
        elif problem is None and file in _UNUSABLE_TOLD:
            _UNUSABLE_TOLD.discard(file)
            log.info("%s: %s is whole now", what(), file.name)
    return problem


def _untaggable(name: str) -> str | None:
    """Why no ``<lora:name:weight>`` tag can name LoRA ``name``: the characters that end its
    name in a tag (None: a tag can)."""
    stops = [stop for stop in TAG_NAME_STOPS if stop in name]
    if not stops:
        return None
    return (
        f"its name holds {' and '.join(map(repr, stops))}, where a <lora:name:weight> tag's "
        "name ends, so no prompt could apply it: rename the file"
    )


# A file's ``stat`` (None: not there, or unreadable) and why it would not load (None: whole).
StatAndProblem = tuple[os.stat_result | None, str | None]


def stat_and_problem(file: Path) -> StatAndProblem:
    """``file``'s ``stat`` (None: not there, or unreadable) and why it would not load
    (``weights_problem``, given that ``stat``: one per check)."""
    try:
        stat = file.stat()  # before its header is read: a change meanwhile is recent
    except OSError as error:
        return None, unreadable(file, error)
    return stat, weights_problem(file, stat)


def _file_problems(entry: ModelEntry, checked: list[Path]) -> Iterator[tuple[Path, str | None]]:
    """Each weights file ``entry`` loads (``entry_weights``) with why it would not load (None:
    whole), its own first (a split release's parts are looked for once it is whole); each
    file looked at, whole or not, is added to ``checked`` (forgotten once gone: renamed)."""
    files = _component_weights(entry.path) if entry.format == "diffusers" else [entry.path]
    checked.extend(files)  # all of them listed, past a first bad one too: none forgotten
    stat = None
    for file in files:
        stat, problem = stat_and_problem(file)
        yield file, problem
    if stat is not None:
        looked: dict[Path, StatAndProblem] = {}
        parts = _split_parts(entry, stat, looked)
        checked.extend(looked)
        yield from parts


def _part_problem(at: Path, file: Path, problem: str | None) -> str | None:
    """``problem`` of ``file``, named from its folder ("unet/...") when it is a part of the
    add-on or model at ``at`` (a folder's weights, an IP-Adapter's image encoder)."""
    if problem is not None and file != at:
        return f"{file.parent.name}/{problem}"
    return problem


def _forget(files: frozenset[Path]) -> None:
    """Forget what was read and told of ``files``, no longer there: a file copied there again
    is checked, and told of, afresh."""
    forget_files(files)
    with _UNUSABLE_TOLD_LOCK:
        _UNUSABLE_TOLD.difference_update(files)


class ModelRegistry:
    """Scans the models folder when a lookup finds it changed (or its scan a second old), so
    models dropped in appear without a restart."""

    def __init__(
        self,
        models_dir: Path,
        allow_pickle: bool = False,
        hashes_file: Path | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``hashes_file``: where file hashes are kept between runs (``inference.file_hashes``;
        None: in this process's memory only); ``clock``: nanoseconds, how old a kept scan is."""
        self.models_dir = Path(models_dir)
        self._clock = clock
        # The last scan, kept while it holds (``_scanned``).
        self._kept_scan: _Scan | None = None
        self.allow_pickle = allow_pickle
        self.hashes_file = hashes_file
        # Lookups scan again and again (every admission lists embeddings): say each hidden
        # file once.
        self._hidden_told: set[Path] = set()
        # The network and upscaler folders' listings by (folder, suffixes) (``_listed``).
        self._listings: dict[tuple[Path, tuple[str, ...]], FolderListing] = {}
        # When each add-on file was last found whole, by ``clock``, and for how long that is
        # trusted (``_whole``).
        self._whole_at: dict[Path, tuple[int, int]] = {}
        # The files each listing (``_listed``'s key, or "checkpoints") had at its last pass, so
        # that those no longer there are forgotten (``_now_listed``).
        self._listed_before: dict[object, frozenset[Path]] = {}

    def _listed(self, folder: Path, suffixes: tuple[str, ...]) -> tuple[Path, ...]:
        """The files with one of ``suffixes`` under ``folder`` (subfolders included), sorted:
        kept between lookups for up to 10 s while no directory of the tree changed
        (``FolderListing``), so admissions (which list the embeddings) walk the folder only
        after a change or that time."""
        kept = self._listings.get((folder, suffixes))
        if kept is not None and kept.still_current():
            return kept.files
        listing = FolderListing.walk(folder, suffixes)
        self._now_listed((folder, suffixes), listing.files)
        if listing.may_keep():
            self._listings[folder, suffixes] = listing
        else:
            self._listings.pop((folder, suffixes), None)
        return listing.files

    def _now_listed(self, key: object, files: Iterable[Path]) -> None:
        """``files`` are what ``key`` lists now: the files it listed before and no longer does
        are forgotten (``_forget``), so what is kept of files stays bounded by those there are."""
        now_listed = frozenset(files)
        gone = self._listed_before.get(key, now_listed) - now_listed
        self._listed_before[key] = now_listed
        if gone:
            for file in gone:
                self._whole_at.pop(file, None)
            _forget(gone)

    def _tell_hidden(self, kind: str, name: str, path: Path, winner: Path) -> None:
        if path not in self._hidden_told:
            self._hidden_told.add(path)
            log.warning("%s %s at %s hidden by %s", kind, name, path, winner)

    def _problem_of(self, entry: ModelEntry, checked: list[Path]) -> str | None:
        """Why ``entry``'s weight files would not load (one still being copied, cut short or
        not of its kind: every job that picked it would fail), said once per file until it
        loads; None when they are whole. The files checked are added to ``checked``."""
        for file, problem in _file_problems(entry, checked):
            problem = _part_problem(entry.path, file, problem)
            if _told(lambda: f"model {entry.name}", file, problem) is not None:
                return problem
        return None

    def load_problem(self, entry: ModelEntry) -> str | None:
        """Why ``entry``'s weight files would not load now (one being copied over, cut short,
        gone), looked at afresh (each header read once per file version); None when whole."""
        try:
            for file, problem in _file_problems(entry, []):
                if problem is not None:
                    return _part_problem(entry.path, file, problem)
        except OSError as error:  # a diffusers folder gone
            return unreadable(entry.path, error)
        return None

    def unusable(self) -> dict[str, str]:
        """The checkpoints left out of ``scan``, by name, with why (``_problem_of``)."""
        return dict(self._scanned().unusable)

    def _misplaced(self, entry: ModelEntry, checked: list[Path]) -> str | None:
        """Where ``entry`` goes when it is a LoRA or VAE file, not a checkpoint (its header
        read once per file version; every job that picked it would fail), said once per file;
        None for anything else. Its file is added to ``checked``."""
        if entry.format != "safetensors":
            return None
        checked.append(entry.path)
        try:
            kind = _ADDON_KINDS(entry.path, entry.path.stat())
        except OSError:
            return None  # its completeness check says why
        if kind is None:
            return None
        where = self.models_dir / _ADDON_FOLDERS[kind]
        sentence = f"{entry.path.name} looks like a {kind}, not a checkpoint: move it to {where}/"
        return _told(lambda: f"model {entry.name}", entry.path, sentence)

    def misplaced(self) -> dict[str, str]:
        """LoRA and VAE files found in the checkpoint folders (left out of ``scan``), by name,
        with where each goes."""
        return dict(self._scanned().misplaced)

    def refused_pickles(self) -> list[Path]:
        """The pickle checkpoints found and left out, as pickles are not allowed here."""
        return sorted(entry.path for entry in self.scan().values() if not self._loads(entry))

    @staticmethod
    def _found(listings: Iterable[FolderListing]) -> list[ModelEntry]:
        """Every checkpoint the checkpoint folders' ``listings`` hold, in the order they are
        searched, each folder's shallowest first (a checkpoint at its top keeps its name
        beside a copy in ``Archive/``), pickles after the others: a pickle (``m.ckpt``,
        sorting before ``m.safetensors``) never hides a file of its name that loads without
        running code."""
        found: list[ModelEntry] = []
        for listing in listings:
            shallow_first = sorted(listing.files, key=lambda file: (len(file.parts), file))
            found += filter(None, map(_entry_for, shallow_first))
        return sorted(found, key=lambda entry: entry.format == "pickle")

    def _checkpoint_listings(self) -> list[FolderListing]:
        """Each checkpoint folder's listing: its files and diffusers folders, subfolders
        included as the web UI's ``Stable-diffusion/SDXL/`` (``CHECKPOINT_SUBFOLDER_DEPTH``),
        but not the models folder's own: those are the add-ons' (``Lora/``, ``ControlNet/``)."""
        listings = []
        for folder_name in CHECKPOINT_FOLDERS:
            folder = self.models_dir / folder_name
            if folder.is_dir():
                depth = 0 if folder_name == "." else CHECKPOINT_SUBFOLDER_DEPTH
                listings.append(
                    FolderListing.walk(
                        folder, _CHECKPOINT_SUFFIXES, max_depth=depth, whole_folder=_is_pipeline
                    )
                )
            elif folder_name == ".":
                # No models folder: stamped as not there, so that its coming shows as a change
                # (each other checkpoint folder's coming changes the models folder's time).
                not_there = Stamps((folder,), (None,), time.time_ns())
                listings.append(FolderListing((), not_there, uncertain=True))
        return listings

    def checkpoint_stamps(self) -> Stamps:
        """Every directory of the checkpoint folders' trees, as stamped by the scan that
        answers lookups now: a checkpoint added, removed or renamed anywhere in them (a
        subfolder's too) changes one. Take them before what is read by name, to keep it by
        them (``bot.services.Services``): a later change then shows."""
        return self._scanned().folders

    def scan(self) -> dict[str, ModelEntry]:
        """The checkpoints by name, those whose files would not load left out (``unusable``)."""
        return dict(self._scanned().entries)

    def _scanned(self) -> _Scan:
        """The checkpoint folders' scan: the kept one while no checkpoint folder changed and
        it is younger than ``SCAN_MAX_AGE_NS``, else a new one, kept once those folders have
        settled (as ``FolderListing.may_keep``)."""
        kept = self._kept_scan
        now = self._clock()
        if (
            kept is not None
            and 0 <= now - kept.scanned_at_ns < SCAN_MAX_AGE_NS
            and kept.folders.unchanged()
        ):
            return kept
        # Each directory is stamped as it is listed: a change meanwhile shows as one at the
        # next lookup. A folder not there is not stamped: the models folder's time says when
        # it comes (``_checkpoint_listings`` stamps that one's absence).
        listings = self._checkpoint_listings()
        folders = Stamps((), (), time.time_ns())
        for listing in listings:
            folders = folders.joined(listing.directories)
        entries: dict[str, ModelEntry] = {}
        unusable: dict[str, str] = {}
        awaited: set[str] = set()
        misplaced: dict[str, str] = {}
        checked: list[Path] = []
        for entry in self._found(listings):
            if (wrong := self._misplaced(entry, checked)) is not None:
                misplaced.setdefault(entry.name, wrong)
                continue
            if (problem := self._problem_of(entry, checked)) is not None:
                unusable[entry.name] = problem
                if entry.name not in entries and self._loads(entry):
                    awaited.add(entry.name)
                continue
            if entry.name in entries:
                self._tell_hidden("model", entry.name, entry.path, entries[entry.name].path)
                continue
            entries[entry.name] = entry
        # A name offered from another folder is not one members lack (shadowed or shadowing).
        unusable = {name: why for name, why in unusable.items() if name not in entries}
        self._now_listed("checkpoints", checked)
        misplaced = {name: why for name, why in misplaced.items() if name not in entries}
        scan = _Scan(entries, unusable, misplaced, frozenset(awaited), folders, now)
        self._kept_scan = scan if folders.settled() else None
        return scan

    def _loads(self, entry: ModelEntry) -> bool:
        """Whether this registry loads ``entry`` once it is whole (pickles only when allowed)."""
        return entry.format != "pickle" or self.allow_pickle

    def loadable(self) -> dict[str, ModelEntry]:
        """The models this registry will load (pickle checkpoints only when allowed)."""
        return {name: entry for name, entry in self.scan().items() if self._loads(entry)}

    def names(self) -> list[str]:
        return sorted(self.loadable())

    def held_names(self) -> list[str]:
        """The checkpoints the folders hold by name, those that would not load now among them
        (``unusable``: still being copied, cut short, a pickle while pickles are off): a
        server's default among them is refused with its reason, not passed over for another
        model (``bot.policy.moderation.default_model_here``)."""
        scan = self._scanned()
        return sorted({*scan.entries, *scan.unusable})

    def kept_held_names(self) -> list[str] | None:
        """``held_names`` as the kept scan found them, while no directory of the checkpoint
        folders' trees changed since (a ``stat`` each: no walk, no header read, so the event
        loop may ask before a command's acknowledgement); None: no scan is kept, it no
        longer holds, or it awaits a checkpoint whose copy ends in place (``awaited``): ask
        ``held_names``, blocking. Past ``SCAN_MAX_AGE_NS`` all the same: a checkpoint written
        over in place since changes no directory, and the render's lookup refuses it then."""
        kept = self._kept_scan
        if kept is None or kept.awaited or not kept.folders.unchanged():
            return None
        return sorted({*kept.entries, *kept.unusable})

    def awaited(self, name: str | None) -> bool:
        """Whether a checkpoint left out now (still being copied, cut short) would take
        ``name`` (None: the first installed by name) once whole: one searched before the
        file that has the name now, or, for None, one whose name sorts no later than the first
        installed's. Its copy ending in place (a diffusers folder's, in its part folders)
        changes no checkpoint folder: what rests on ``resolve(name)`` is looked up again. One
        searched after the file that has the name (hidden by it) is not: it takes the name
        only once that file goes (its folder changes) or is written over."""
        scan = self._scanned()
        if name is not None:
            return as_typed(name) in scan.awaited
        installed = [other for other, entry in scan.entries.items() if self._loads(entry)]
        first = min(installed, default=None)
        return any(first is None or other <= first for other in scan.awaited)

    def resolve(self, name: str | None, default: str | None = None) -> ModelEntry:
        """The entry for ``name`` (or the default, or the first model found)."""
        found = self.scan()
        entries = self.loadable()
        wanted = name or default or (sorted(entries)[0] if entries else None)
        wanted = None if wanted is None else as_typed(wanted)
        if wanted in found and wanted not in entries:
            raise RenderInputError(
                f"model {wanted!r} is a pickle checkpoint ({found[wanted].path.name}), which can "
                "run arbitrary code when loaded; convert it to .safetensors, or let an admin "
                "allow pickle checkpoints (EASEL_ALLOW_PICKLE=1: they are then read weights-only)"
            )
        if wanted is None:
            raise not_installed(
                "a model",
                f"no models found in {self.models_dir}: put a .safetensors checkpoint or a "
                "diffusers folder there (or run `easel tiny-model models/tiny` to try things out)",
            )
        problem = self.unusable().get(wanted) if wanted not in entries else None
        if problem is not None:
            raise RenderInputError(f"model {wanted!r} cannot be loaded now: {problem}")
        if wanted not in entries:
            # The member reads this error, and a server may allow only some models: it names
            # none (the request layer names those the member may use there:
            # ``bot.policy.unavailable``), and tells them to ask an admin. The request layer
            # queues only installed names: one missing here was removed since (or lacks on
            # this worker), which the operator's log says once, naming those installed and not
            # the name asked: a member's words (/imagine's model option takes any text).
            raise not_installed(
                "model",
                f"not in {self.models_dir}; installed: {', '.join(sorted(entries)) or 'none'}",
                asked=wanted,
            )
        return entries[wanted]

    def network_files(self, kind: NetworkKind) -> dict[str, Path]:
        """``.safetensors`` LoRAs, embeddings or VAEs by file stem (subfolders included, as in
        the web UI); pickles are never listed, they could run code when loaded."""
        return self._files_in(NETWORK_FOLDERS[kind], (NETWORK_SUFFIX,), kind)

    def upscaler_files(self) -> dict[str, Path]:
        """Model upscalers by file stem: ``.safetensors``, plus ``.pth``/``.pt`` where pickles
        are allowed (read weights-only by ``inference.pickles``, never as TorchScript)."""
        pickles = UPSCALER_PICKLE_SUFFIXES if self.allow_pickle else ()
        return self._files_in(UPSCALER_FOLDERS, (NETWORK_SUFFIX, *pickles), "upscaler")

    def upscaler_names(self) -> list[str]:
        """Lanczos (always there), then the model upscalers in name order."""
        return [LANCZOS, *sorted(self.upscaler_files(), key=str.casefold)]

    def resolve_upscaler(
        self, name: str | None, default: str | None = None
    ) -> tuple[str, Path | None]:
        """``(name, file)`` for an upscaler name in any letter case; the file is None for
        Lanczos. No name means ``default``, else the first model upscaler, else Lanczos."""
        files = self.upscaler_files()
        name = name or default
        if name is None:
            if not files:
                return LANCZOS, None
            first = min(files, key=str.casefold)
            return first, files[first]
        name = as_typed(name)
        if name.casefold() == LANCZOS.casefold():
            return LANCZOS, None
        for stem, path in files.items():
            if stem.casefold() == name.casefold():
                return stem, path
        for stem, path in self.pickled_upscaler_files().items():
            if stem.casefold() == name.casefold():
                raise RenderInputError(
                    f"upscaler {name!r} is a pickle file ({path.name}), which can run code when "
                    "loaded; convert it to .safetensors, or let an admin allow pickle files "
                    "(EASEL_ALLOW_PICKLE=1)"
                )
        # As for models: a server may allow some upscalers only, so the member's error names
        # none (bot.policy.addons names those allowed there); the operator's log and words
        # (``for_operator``: `easel upscale`) name them all, as doctor's own list does.
        installed = ", ".join(self.upscaler_names())
        log.warning("unknown upscaler asked for; installed: %s", installed)  # a member's words
        raise NotInstalled(
            f"unknown upscaler {name!r}: it is not installed on this device",
            f"unknown upscaler {name!r}; installed: {installed}",
        )

    def face_restorer_files(self) -> dict[str, Path]:
        """Face restorers by file stem: ``.safetensors``, plus ``.pth``/``.pt`` where pickles
        are allowed (read weights-only, as upscalers are)."""
        pickles = UPSCALER_PICKLE_SUFFIXES if self.allow_pickle else ()
        return self._files_in(FACE_RESTORER_FOLDERS, (NETWORK_SUFFIX, *pickles), "face restorer")

    def pickled_upscaler_files(self) -> dict[str, Path]:
        """Upscalers published as pickles (listed only where pickles are allowed): where they
        are not, none is offered, so none is checked (a member naming one is told it is a
        pickle file, whole or not)."""
        return self._files_in(
            UPSCALER_FOLDERS, UPSCALER_PICKLE_SUFFIXES, "upscaler", checked=self.allow_pickle
        )

    def _files_in(
        self,
        folder_names: tuple[str, ...],
        suffixes: tuple[str, ...],
        kind: str,
        *,
        checked: bool = True,
    ) -> dict[str, Path]:
        """Files with one of ``suffixes`` under the folders, by stem (``as_typed``: two whose
        stems differ only in Unicode form are one name); the first one found wins. A file
        that would not load (still being copied, cut short) is left out (``_whole``), unless
        not ``checked``."""
        files: dict[str, Path] = {}
        seen: set[Path] = set()
        now = self._clock()
        for folder_name in folder_names:
            folder = self.models_dir / folder_name
            if not folder.is_dir():
                self._now_listed((folder, suffixes), ())
                continue
            # On a case-insensitive disk ``lora`` and ``Lora`` are one folder.
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            for path in self._listed(folder, suffixes):
                name = as_typed(path.stem)
                if kind == "lora" and (untaggable := _untaggable(name)) is not None:
                    _told(functools.partial(str, f"{kind} {name} at {path}"), path, untaggable)
                    continue
                if checked and not self._whole(kind, name, path, path, now):
                    continue
                if name in files:
                    self._tell_hidden(kind, name, path, files[name])
                    continue
                files[name] = path
        return files

    def whole_addons(
        self, kind: str, candidates: Iterable[tuple[str, Path, Sequence[Path]]]
    ) -> dict[str, Path]:
        """The add-ons among ``candidates`` (name, file or folder, and the weight files it
        loads: those another module lists, ControlNets and IP-Adapters) whose weight files
        all would load (``_whole``), by name (``as_typed``), the first in their order winning:
        one still being copied is left out until it is whole, as a LoRA is. What was kept of
        weight files no longer among them is forgotten."""
        now = self._clock()
        found = list(candidates)
        self._now_listed(kind, [file for _, _, files in found for file in files])
        whole: dict[str, Path] = {}
        for name, at, files in found:
            typed = as_typed(name)
            if all(self._whole(kind, typed, at, file, now) for file in files):
                if typed in whole:
                    self._tell_hidden(kind, typed, at, whole[typed])
                else:
                    whole[typed] = at
        return whole

    def _whole(self, kind: str, name: str, at: Path, file: Path, now: int) -> bool:
        """Whether the weights ``file`` of add-on ``name`` (the file or folder ``at``) would
        load (``weights_problem``), the operator told once when it would not (it is left out
        until it is whole). A lookup stats only the files due (admissions and autocomplete
        list add-ons; a folder may hold thousands of LoRAs), once each: one that is not whole
        is checked at every lookup, so it is offered as soon as its copy ends; one found whole
        is trusted for ``SCAN_MAX_AGE_NS`` (as a kept scan is), or for ``LISTING_MAX_AGE_NS``
        when it had gone unchanged that long (a copy moves its mtime all along). A file added,
        removed or renamed is seen at once (its folder's listing changes); a half copy written
        over one found whole, in place or renamed onto it, may be offered for that trust (its
        job then fails, refunded)."""
        trusted = self._whole_at.get(file)
        if trusted is not None and 0 <= now - trusted[0] < trusted[1]:
            return True
        stat, problem = stat_and_problem(file)
        problem = _part_problem(at, file, problem)
        if _told(lambda: f"{kind} {name} at {at}", file, problem) is not None or stat is None:
            self._whole_at.pop(file, None)
            return False
        settled = stat.st_mtime_ns < time.time_ns() - LISTING_MAX_AGE_NS
        self._whole_at[file] = (now, LISTING_MAX_AGE_NS if settled else SCAN_MAX_AGE_NS)
        return True

    def short_hash(self, entry: ModelEntry) -> str:
        """The web UI's model hash: the first 10 hex digits of the file's SHA-256."""
        return self.sha256(entry.hashed_file)[:10]

    def sha256(self, file: Path, *, tensors_only: bool = False) -> str:
        """``file``'s SHA-256, read once per process (``inference.file_hashes``; ``tensors_only``:
        of a ``.safetensors`` file's tensor data alone)."""
        return file_sha256(file, self.hashes_file, self.models_dir, tensors_only=tensors_only)

    def recalled_short_hash(self, entry: ModelEntry) -> str | None:
        """``short_hash`` if it is known without reading the file; else None, and the file is
        read in the background (``inference.file_hashes.recalled_file_sha256``)."""
        digest = recalled_file_sha256(entry.hashed_file, self.hashes_file, self.models_dir)
        return None if digest is None else digest[:10]
