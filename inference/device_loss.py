"""Whether a render's error says its device is gone (a CUDA context an illegal memory access
or an Xid left unusable): every later render there fails the same way, so the job is not to
blame, and only a new process (a restart) gets a working device back.

Pure: torch is not imported here (``bot`` may ask without it); an error torch raised means
torch is loaded already.
"""

from __future__ import annotations

import sys

# The exit status of a process (`easel run`, `easel worker`) that stopped because a device was
# lost: whatever supervises it (compose's restart policy, systemd's Restart=on-failure) starts
# a new one, which gets the device back if a new CUDA context can.
DEVICE_LOST_EXIT_STATUS = 4
# How the messages of CUDA's, cuBLAS's and cuDNN's failures begin (torch raises them as plain
# RuntimeErrors before 2.8, and some still are: cuBLAS, cuDNN).
_LOST_DEVICE_PREFIXES = (
    "CUDA error",
    "CUDA driver error",
    "CUBLAS_STATUS",
    "cuDNN error",
    "CUDNN_STATUS",
)
# A kernel's allocation that failed: the device ran out of memory, which frees up again (the
# job fails as today, ``torch.OutOfMemoryError``'s handling); the context is still sound.
_NOT_LOST = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


class DeviceLost(Exception):
    """A render's device is gone (``device_lost``); the message names it and the error."""


def lost_reason(device: str, error: BaseException) -> str:
    """One line naming ``device`` and what ``error`` said of it."""
    said = next(iter(str(error).strip().splitlines()), type(error).__name__)
    return f"device {device} lost: {said}"


def device_lost(error: BaseException) -> bool:
    """Whether ``error``, raised by a render, may mean its device can render nothing more in
    this process (out of memory does not). A first filter only: many such errors leave the
    device sound (a launch too big for a batch, a convolution cuDNN does not support at that
    size), so only a failed ``probe`` of the device afterwards says it is lost."""
    if not isinstance(error, RuntimeError):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return False
    text = str(error)
    if any(sign in text for sign in _NOT_LOST):
        return False
    accelerator_error = None if torch is None else getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return text.lstrip().startswith(_LOST_DEVICE_PREFIXES)
