"""The ``easel_data_free_bytes`` gauge: free space under EASEL_DATA_DIR, read at each scrape."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import metrics
from bot.metrics import METRICS_REGISTRY as REGISTRY


@pytest.fixture
def watched_dir(tmp_path: Path) -> Iterator[Path]:
    metrics.watch_data_dir(tmp_path)
    yield tmp_path
    metrics.watch_data_dir(Path("/nonexistent-easel-data"))  # later tests see no number


def test_free_bytes_are_those_of_the_data_dirs_disk(watched_dir: Path) -> None:
    before = shutil.disk_usage(watched_dir).free
    reported = REGISTRY.get_sample_value("easel_data_free_bytes")
    after = shutil.disk_usage(watched_dir).free
    assert reported is not None
    # Other processes write to the same disk between the reads: bounded by them, plus 1 MiB.
    assert min(before, after) - 2**20 <= reported <= max(before, after) + 2**20


def test_a_missing_data_dir_reports_nothing_and_the_scrape_goes_on(tmp_path: Path) -> None:
    metrics.watch_data_dir(tmp_path / "gone")
    assert REGISTRY.get_sample_value("easel_data_free_bytes") is None
    assert REGISTRY.get_sample_value("easel_queue_depth") is not None
