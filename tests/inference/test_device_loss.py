"""Which render errors say the device is gone (the job is not to blame), and which do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.device_loss import device_lost, lost_reason
from inference.engine import Engine
from inference.types import RenderFailed, RenderInputError
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: unspecified launch failure\nCUDA kernel errors might be ..."),
        RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, ...)`"),
        RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
        torch.AcceleratorError("CUDA error: device-side assert triggered"),
        RuntimeError("CUDA driver error: an illegal memory access was encountered"),
    ],
    ids=["illegal-access", "launch-failure", "cublas", "cudnn", "accelerator-error", "driver"],
)
def test_errors_of_a_gone_device_are_device_lost(error: BaseException) -> None:
    assert device_lost(error)


@pytest.mark.parametrize(
    "error",
    [
        # Out of memory frees up again: the job fails as it does today.
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        # The job's own failures, and bugs.
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"),
        RuntimeError("engine said: CUDA error somewhere in its words"),
        RenderFailed("the model file is damaged"),
        RenderInputError("width must be 64-2048"),
        ValueError("CUDA error: not a RuntimeError"),
    ],
    ids=[
        "oom",
        "cuda-oom",
        "cublas-alloc",
        "shapes",
        "quoted",
        "render-failed",
        "input",
        "value-error",
    ],
)
def test_other_errors_are_the_jobs(error: BaseException) -> None:
    assert not device_lost(error)


def test_the_reason_is_one_line_naming_the_device() -> None:
    error = RuntimeError("CUDA error: an illegal memory access was encountered\nSearch for ...")
    assert lost_reason("cuda:1", error) == (
        "device cuda:1 lost: CUDA error: an illegal memory access was encountered"
    )


class _Gone(InstantEngine):
    def probe(self) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


async def test_a_devices_probe_says_what_its_engine_raised_on_the_device_thread(
    tmp_path: Path,
) -> None:
    gone = DeviceWorker("cuda:0", lambda _: _Gone())
    sound = DeviceWorker("cpu", lambda device: Engine(tmp_path, device))
    try:
        failed = await gone.probe()
        assert isinstance(failed, RuntimeError) and device_lost(failed)
        assert await sound.probe() is None  # the engine's probe: nothing to check on a CPU
    finally:
        gone.close()
        sound.close()


async def test_an_engine_that_cannot_be_built_fails_the_probe_with_its_own_error() -> None:
    def unbuildable(_device: str) -> InstantEngine:
        raise RenderInputError("quantize int8 needs a CUDA device")

    worker = DeviceWorker("cpu", unbuildable)
    try:
        failed = await worker.probe()
        assert isinstance(failed, RenderInputError) and not device_lost(failed)
    finally:
        worker.close()
