"""Weights kept in host memory are copied out of the files they were read from.

diffusers, transformers and gguf read ``.safetensors`` and GGUF files by mapping them: each
weight loaded on the CPU is the file's pages. A file overwritten in place under them (``cp``
over it, ``rsync --inplace``) is cut short as the copy begins, and the next read of those pages
ends the process with a bus error (SIGBUS): no exception, every job in it lost. Weights moved
to a GPU are copies already; those that stay on the host (the CPU engine, CPU offload) are
copied here once, as they load, into memory of the process's own.
"""

from __future__ import annotations

import itertools

import torch


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
