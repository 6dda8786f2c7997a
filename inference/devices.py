"""Which devices get a worker when ``EASEL_DEVICES`` is empty."""

from __future__ import annotations

import torch


def default_dtype(device: str) -> torch.dtype:
    """Half precision halves GPU memory and time; CPUs are faster (and exact) in float32."""
    return torch.float16 if device.startswith("cuda") else torch.float32


def resolve_devices(configured: tuple[str, ...]) -> tuple[str, ...]:
    if configured:
        return configured
    if torch.cuda.is_available():
        return tuple(f"cuda:{index}" for index in range(torch.cuda.device_count()))
    return ("cpu",)


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None when it can."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return None
    if kind == "cuda":
        if not torch.cuda.is_available():
            return f"{device}: CUDA is not available (no GPU, or torch is a CPU-only build)"
        if index and int(index) >= torch.cuda.device_count():
            return f"{device}: only {torch.cuda.device_count()} CUDA device(s) are present"
        return None
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"{device}: Apple MPS is not available"
    return None


def free_device_bytes(device: str) -> int | None:
    """Free memory on a usable CUDA device, in bytes; None for the CPU and other kinds."""
    if not device.startswith("cuda") or device_problem(device) is not None:
        return None
    return int(torch.cuda.mem_get_info(device)[0])
