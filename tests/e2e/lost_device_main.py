"""``easel run`` whose every device is lost: each render raises what torch raises once the
CUDA context is gone, for a test to watch the process stop itself.

    python -m tests.e2e.lost_device_main
"""

from __future__ import annotations

import sys

from bot import app
from bot.cli.main import main
from bot.settings import Settings
from inference.worker import EngineFactory
from tests.integration.test_device_lost import LostDeviceEngine


def _lost_devices(_: Settings) -> EngineFactory:
    return lambda _device: LostDeviceEngine()


if __name__ == "__main__":
    app.engine_factory_for = _lost_devices  # type: ignore[assignment]
    sys.exit(main(["run"]))
