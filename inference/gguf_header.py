"""The one reader of a ``.gguf`` file's header: its tensors' names, shapes, sizes and packing,
for the model list (family, quantization), ``easel doctor``, the loader's family check and the
registry's completeness check (``gguf_problem``).

Pure Python apart from ``gguf`` (numpy): the file is memory-mapped and only its header read,
never its weights. Cached per file version, since lists ask on every autocomplete keystroke.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

from inference.file_versions import PerFileVersion, problem_of, unreadable

# GGUF types that hold plain floats; every other type is packed in quantized blocks.
FLOAT_GGUF_TYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    stored_bytes: int
    # The GGUF quantization it stays packed in (``Q8_0``); None for a plain float tensor.
    packed: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def gguf_tensors(path: Path) -> tuple[TensorInfo, ...]:
    """A GGUF file's tensors, from its header. GGUF writes shapes innermost first; they are
    given here as torch has them. A header that does not read (a file cut short or not GGUF)
    raises ValueError, whatever the reader raised."""
    stat = path.stat()
    return _gguf_tensors(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _gguf_tensors(path: Path, mtime_ns: int, size: int) -> tuple[TensorInfo, ...]:
    from gguf import GGUFReader

    try:
        tensors = GGUFReader(path).tensors
    except LookupError as error:  # an index or key past what a cut header holds
        raise ValueError(f"{path.name}'s GGUF header does not read: {error}") from error
    return tuple(
        TensorInfo(
            tensor.name,
            tuple(int(side) for side in reversed(tensor.shape)),
            int(tensor.n_bytes),
            None if tensor.tensor_type.name in FLOAT_GGUF_TYPES else tensor.tensor_type.name,
        )
        for tensor in tensors
    )


def gguf_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
    """Why the ``.gguf`` file at ``path`` would not load: its header does not read, or a
    tensor's data runs past the file's end (still being copied, cut short); None when it is
    whole. Read once per file version, memory-mapped (the weights are not read); ``stat``: the
    file as the caller found it (None: statted here)."""
    return problem_of(_GGUF_PROBLEMS, path, stat)


def _read_gguf_problem(path: Path, size: int) -> str | None:
    try:
        # The reader maps each tensor's data from its offset and size in the header: a tensor
        # that runs past the end of the file does not map, and the header says no more.
        gguf_tensors(path)
    except OSError as error:
        return unreadable(path, error)
    except ValueError as error:
        return f"{path.name} is not a whole GGUF file ({size} bytes; {error}): still copying?"
    return None


_GGUF_PROBLEMS = PerFileVersion(_read_gguf_problem)
