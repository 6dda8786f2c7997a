"""The one reader of a ``.gguf`` file's header: its tensors' names, shapes, sizes and packing,
for the model list (family, quantization), ``easel doctor`` and the loader's family check.

Pure Python apart from ``gguf`` (numpy): the file is memory-mapped and only its header read,
never its weights. Cached per file version, since lists ask on every autocomplete keystroke.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

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
    given here as torch has them."""
    stat = path.stat()
    return _gguf_tensors(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _gguf_tensors(path: Path, mtime_ns: int, size: int) -> tuple[TensorInfo, ...]:
    from gguf import GGUFReader

    return tuple(
        TensorInfo(
            tensor.name,
            tuple(int(side) for side in reversed(tensor.shape)),
            int(tensor.n_bytes),
            None if tensor.tensor_type.name in FLOAT_GGUF_TYPES else tensor.tensor_type.name,
        )
        for tensor in GGUFReader(path).tensors
    )
