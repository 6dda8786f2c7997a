"""Weights kept in host memory are the process's own, never a file's pages.

diffusers, transformers and gguf read ``.safetensors`` and GGUF files by mapping them: each
weight loaded on the CPU is the file's pages. A file overwritten in place under them (``cp``
over it, ``rsync --inplace``) is cut short as the copy begins, and the next read of those pages
ends the process with a bus error (SIGBUS): no exception, every job in it lost. That holds
while a model loads (diffusers reads the mapped weights as it converts and places them) and
after, for the weights left on the host (the CPU engine, CPU offload).

Checkpoints, ControlNets and LoRAs load mapped all the same: their weights are the page cache
until they reach the device (a copy of its own would be another file's size of anonymous
memory, 23 GB for a Flux file). A load waits for a file being written to settle
(``file_versions.being_written``); a copy that starts after the load did can still end the
process, which is why model files are copied beside and renamed into place
(docs/deployment.md). Weights that stay on the host after a load are copied into memory of
the process's own (``own_weights``). Easel's own small loaders (VAE overrides, embeddings,
upscalers, face restorers, the depth annotator) read ``.safetensors`` with ordinary reads
(``read_safetensors``): a file cut short is a short read, an exception naming it.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import struct
from pathlib import Path

import torch

from inference.metadata import safetensors_header, tensors_problem
from inference.types import RenderFailed

# safetensors' element types, as torch's.
_TORCH_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "U16": torch.uint16,
    "I16": torch.int16,
    "U32": torch.uint32,
    "I32": torch.int32,
    "U64": torch.uint64,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


class WeightsCutShort(RenderFailed):
    """A weights file ended before the data its header gives, as it was read: being copied
    over (or rewritten in place) while it loaded."""


def own_weights(module: torch.nn.Module) -> int:
    """Copy each of ``module``'s CPU parameters and buffers that lives in memory torch did not
    allocate (a file's pages mapped, a numpy array's) into memory of its own, in place (the
    same parameter objects, shared weights shared still). The bytes copied."""
    copied = 0
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        # Storage torch allocated can be resized; a mapped file's or a borrowed buffer's not.
        if tensor.device.type == "cpu" and not tensor.untyped_storage().resizable():
            tensor.data = tensor.data.clone()
            copied += tensor.untyped_storage().nbytes()
    return copied


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, each read straight from the file into a tensor
    torch allocated (the peak: the file's size, once), on the CPU; ``WeightsCutShort`` naming
    the file when it ends early, ``ValueError`` naming the file (and the tensor) when it is
    not a ``.safetensors`` file safetensors would load (tensors overlapping, one's shape not
    fitting its data)."""
    header = safetensors_header(path)
    # Checked as safetensors checks them: else a shape over too few bytes is torch's bare
    # RuntimeError, and overlapping tensors read silently.
    if (problem := tensors_problem(path, header)) is not None:
        raise ValueError(problem)
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    read: dict[str, torch.Tensor] = {}
    with path.open("rb", buffering=0) as stream:
        (header_length,) = struct.unpack("<Q", stream.read(8))
        data_start = 8 + header_length
        # In file order: one sequential read of the data.
        for name, info in sorted(tensors.items(), key=lambda item: item[1]["data_offsets"]):
            dtype = _TORCH_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(
                    f"{path.name}'s tensor {name!r} is of type {info['dtype']}, which Easel "
                    f"does not read (known: {', '.join(_TORCH_DTYPES)})"
                )
            begin, end = info["data_offsets"]
            data = torch.empty(end - begin, dtype=torch.uint8)
            stream.seek(data_start + begin)
            _read_into(stream, data, path)
            read[name] = data.view(dtype).reshape(info["shape"])
    return read


def _read_into(stream: io.FileIO, data: torch.Tensor, path: Path) -> None:
    """Fill the bytes of ``data`` from ``stream`` (one read may give fewer than asked)."""
    # Through its address, not ``data.numpy()``: a storage numpy shares is fixed in size,
    # which ``own_weights`` takes for a mapped file's and would copy again.
    view = memoryview((ctypes.c_char * data.numel()).from_address(data.data_ptr())).cast("B")
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])
        if not got:
            raise WeightsCutShort(
                f"{path.name} ended at byte {stream.tell():,}, short of the weights its "
                "header gives: it was cut short while it loaded (being copied over?); try "
                "again once the copy has finished"
            )
        filled += got
