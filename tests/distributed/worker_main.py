"""``easel worker`` with a torch-free engine, for tests that kill or restart processes.

    python -m tests.distributed.worker_main URL --devices a,b --seconds 2 --idle-poll 0.1

Logs one line per event on stdout ("job <id>: started on <device> (delivery <n>)").
"""

from __future__ import annotations

import argparse
import logging
import sys

from bot.broker_worker import WorkerConfig, run_worker
from tests.support.engines import InstantEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--devices", default="test-0")
    parser.add_argument("--seconds", type=float, default=0.0, help="render time per job")
    parser.add_argument("--idle-poll", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    engine = InstantEngine(seconds=args.seconds)
    config = WorkerConfig(args.url, tuple(args.devices.split(",")), idle_poll_s=args.idle_poll)
    run_worker(config, lambda _device: engine)


if __name__ == "__main__":
    main()
