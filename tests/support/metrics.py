"""Reading a running Easel process's metrics server the way Prometheus does: over HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str) -> tuple[int, str]:
    """Status and body of a GET (an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def scrape(port: int) -> Samples:
    """Every sample of /metrics on this machine's ``port``, by name and labels."""
    status, text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scraped_until(
    port: int, condition: Callable[[Samples], bool], within_s: float
) -> Samples:
    """The first scrape of ``port``'s /metrics for which ``condition`` holds, polled."""
    async with asyncio.timeout(within_s):
        while not condition(samples := await scrape(port)):  # noqa: ASYNC110 (another process's view)
            await asyncio.sleep(0.05)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)
