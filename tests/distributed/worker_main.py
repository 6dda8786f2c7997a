"""``easel worker`` with a torch-free engine (or a real one), for tests that kill or restart
processes or need a worker that shares nothing with the bot but the broker.

    python -m tests.distributed.worker_main URL --devices a,b --seconds 2 --idle-poll 0.1
    python -m tests.distributed.worker_main URL --models DIR   # a real engine, on the CPU

Logs one line per event on stdout ("job <id>: started on <device> (delivery <n>)").
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bot.jobs.broker.worker import WorkerConfig, run_worker
from tests.support.engines import InstantEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--devices", default="test-0")
    parser.add_argument("--seconds", type=float, default=0.0, help="render time per job")
    parser.add_argument("--encode-seconds", type=float, default=0.0, help="PNG time per job")
    parser.add_argument("--idle-poll", type=float, default=0.1)
    parser.add_argument("--models", type=Path, help="render for real with the models in this")
    parser.add_argument("--job-files", type=Path, help="the root of its jobs' input folders")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    config = WorkerConfig(
        args.url,
        tuple(args.devices.split(",")),
        idle_poll_s=args.idle_poll,
        job_files_root=args.job_files,
    )
    if args.models is None:
        engine = InstantEngine(seconds=args.seconds, encode_seconds=args.encode_seconds)
        run_worker(config, lambda _device: engine)
        return
    from inference.engine import Engine

    run_worker(config, lambda _device: Engine(args.models, device="cpu"))


if __name__ == "__main__":
    main()
